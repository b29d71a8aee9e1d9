"""`avtok demo` end to end (slow): synthetic videos → extract → k-means → tokenize → train → generate → oracle."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from avtok.cli.main import cli


@pytest.mark.slow
def test_demo_end_to_end(tmp_path) -> None:
    out = tmp_path / "demo"
    r = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    acc = metrics["oracle_accuracy"]
    # the acceptance bar: held-out images turned into sound of the right class (chance 0.125)
    assert acc["cfg_on"] >= 0.8, acc
    assert 0.0 <= acc["cfg_off"] <= 1.0  # CFG off is reported beside CFG on
    assert acc["reference"] >= 0.95 and acc["reconstruction"] >= 0.9
    assert metrics["test_clips"] == 40 and metrics["chance"] == 0.125
    i2a = metrics["token_metrics"]["image2audio"]["ratio_1"]
    assert i2a["delta_nll_uncond"] > 0  # the model uses the image
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
