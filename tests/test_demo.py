"""`avtok demo` end to end (slow): synthetic videos → extract → k-means → tokenize → train → generate → oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from avtok.cli.main import cli
from avtok.model.mel import spec01
from avtok.pipeline import demo as D
from avtok.pipeline import synthetic as syn
from click.testing import CliRunner
from PIL import Image


def test_fast_griffin_lim_keeps_the_oracle_cues() -> None:
    """The demo's vocoder path (pseudo-inverse + 12 Griffin-Lim iterations) keeps pitch and rhythm."""
    waves = [syn.synth_audio(k, np.random.default_rng(40 + k)) for k in range(8)]
    specs = np.stack([spec01(w) for w in waves])
    out = D.fast_griffin_lim(12)(specs)
    assert out.shape == (8, 848 * 256)
    assert [syn.classify_audio(w.numpy(), 22050) for w in out] == list(range(8))


def test_loss_curve_and_summary(tmp_path) -> None:
    rows = [{"step": s, "loss": 5.0 / s} for s in range(1, 30)] + [{"step": 29, "eval": {"i2a_nll": 1.0}}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    D.loss_curve_png(tmp_path / "metrics.jsonl", tmp_path / "loss.png")
    with Image.open(tmp_path / "loss.png") as im:
        assert im.size == (640, 360)
    cond = {"nll": 1.0, "accuracy": 0.5}
    metrics = {"oracle_accuracy": {"cfg_on": 0.9, "cfg_off": 0.5, "reconstruction": 1.0, "reference": 1.0},
               "cfg": 3.0, "test_clips": 40, "chance": 0.125, "step": 10,
               "token_metrics": {"image2audio": {"ratio_1": {"true": cond, "masked": cond, "shuffled": cond}}}}
    table = D.summary_table(metrics)
    assert "| generated, CFG on (w = 3) | 0.900 |" in table and "| generated, CFG off (w = 0) | 0.500 |" in table


@pytest.mark.slow
def test_demo_end_to_end(tmp_path) -> None:
    out = tmp_path / "demo"
    r = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    acc = metrics["oracle_accuracy"]
    # the acceptance bar: held-out images turned into sound of the right class (chance 0.125), with
    # guidance on and off both reported
    assert 0.0 <= acc["cfg_on"] <= 1.0 and 0.0 <= acc["cfg_off"] <= 1.0
    assert max(acc["cfg_on"], acc["cfg_off"]) >= 0.8, acc
    assert acc["reference"] >= 0.95 and acc["reconstruction"] >= 0.9
    assert metrics["test_clips"] == 40 and metrics["chance"] == 0.125
    i2a = metrics["token_metrics"]["image2audio"]["ratio_1"]
    # the model uses the image: the true frame gives more right audio tokens than no frame, and a frame of
    # another clip costs NLL. (NLL with no frame can be the lowest of the three: the tiny model is
    # overconfident about the noise-floor tokens of a class, and a hedging unconditional guess pays less.)
    assert i2a["true"]["accuracy"] > i2a["masked"]["accuracy"]
    assert i2a["delta_nll_shuffled"] > 0
    report = out / "report"
    assert len(list((report / "wav").glob("*_cfg_on.wav"))) == 40
    assert len(list((report / "wav").glob("*_cfg_off.wav"))) == 40
    assert len(list((report / "png").glob("*.png"))) == 40
    assert (report / "loss_curve.png").stat().st_size > 1000
    assert "oracle class accuracy" in r.output and "CFG off" in r.output
    # a re-run reuses every finished stage
    r2 = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert r2.exit_code == 0, r2.output
    assert "reusing" in r2.output
    again = json.loads((report / "metrics.json").read_text())
    assert again["oracle_accuracy"] == acc
