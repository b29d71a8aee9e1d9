"""The full `avtok demo` (slow, 2.5-5 minutes on 2 cores): its scores against the issue's bars.

In its own file so that `pytest -n 2 --dist loadfile` runs it on one worker while the other runs the rest
(tests/conftest.py hands it out first).
"""

from __future__ import annotations

import json

import pytest
from avtok.cli.main import cli
from click.testing import CliRunner


@pytest.mark.slow
def test_demo_end_to_end(tmp_path) -> None:
    """The full demo on 40 held-out clips meets the issue's bars: image→audio, audio→image and inpainting at
    least 0.9 with guidance (and without), joint agreement at least 0.8, and guidance at least no guidance
    in every directed task. Over seeds 0-4 and four sampler draws each the lowest scores were 1.000, 0.975,
    0.925 and 0.850 (docs/method.md, "The demo"); seed 0, the default, scores 1.000 / 1.000, 0.975 / 0.975,
    1.000 / 1.000 and 1.000 and ties guidance in every draw. On another processor the last bits of the run
    differ and it moves like another seed; the bars held on every seed."""
    out = tmp_path / "demo"
    r = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    t = metrics["tasks"]
    assert metrics["test_clips"] == 40 and metrics["chance"] == 0.125
    for task in ("image2audio", "audio2image", "inpaint"):
        assert t[task]["cfg_on"] >= 0.9 and t[task]["cfg_off"] >= 0.9, (task, t)
        assert t[task]["cfg_on"] >= t[task]["cfg_off"], (task, t)  # guidance at least no guidance
    assert t["joint"]["agreement"] >= 0.8, t
    assert metrics["options"]["token_temperature"] == 0.1 and metrics["options"]["top_p"] == 0.7
    assert metrics["options"]["confidence"] == "conditional"
    assert metrics["options"]["model_overrides"]["pos_init"] == "sincos"
    assert metrics["task_detail"]["joint"]["0"]["image_has_class"] >= 0.9, t  # image-first: a whole picture first
    assert metrics["task_detail"]["inpaint"]["1"]["click_free"] >= 0.925  # guidance draws almost no stray click codes
    assert metrics["oracle_accuracy"]["cfg_on"] == t["image2audio"]["cfg_on"]
    assert set(metrics["cfg_sweep"]["image2audio"]) == {"0", "1", "2", "3", "5"}
    acc = metrics["oracle_accuracy"]
    assert acc["reference"] >= 0.95 and acc["reconstruction"] >= 0.9
    assert metrics["image_oracle_accuracy"] == {"reconstruction": 1.0, "reference": 1.0}
    i2a = metrics["token_metrics"]["image2audio"]["ratio_1"]
    assert i2a["true"]["accuracy"] > i2a["masked"]["accuracy"]
    assert i2a["delta_nll_shuffled"] > 0
    report = out / "report"
    assert len(list((report / "wav").glob("*_cfg_on.wav"))) == 80  # image→audio and inpainting
    assert len(list((report / "png").glob("*_audio2image.png"))) == 40
    assert (report / "loss_curve.png").stat().st_size > 1000
    assert metrics["timings"]["total"] > 0
    # a re-run reuses every finished stage
    r2 = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert r2.exit_code == 0, r2.output
    assert "reusing" in r2.output
    again = json.loads((report / "metrics.json").read_text())
    assert again["tasks"] == t
