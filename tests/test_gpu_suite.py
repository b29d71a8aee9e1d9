"""`bench/gpu_suite.py --tiny` (the CI smoke test of the GPU suite): exit 0, every row in the JSON with its
keys and types, every row in the printed table. Structure only: CPU figures and timings are not checked
(on a loaded machine a part may end as "budget exhausted", which is a figure, not a failure)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["device.matmul", "tokenize.baseline", "tokenize.exact", "tokenize.fast", "tokenize.fast_vs_baseline",
        "tokenize.agreement", "train.bf16_eager", "train.fp16_b24", "train.fp16_b24_ckpt", "sample.i2a",
        "ddp.train", "train.bf16_compiled"]
TARGETED = {"tokenize.fast", "tokenize.fast_vs_baseline", "tokenize.agreement", "train.fp16_b24",
            "train.fp16_b24_ckpt", "sample.i2a", "train.bf16_compiled"}
ROW_KEYS = {"id": str, "part": str, "what": str, "unit": str, "target": str, "status": str, "result": str,
            "note": str, "details": dict}
COLUMNS = ["row", "value", "unit", "target", "result", "note"]


@pytest.mark.slow
def test_tiny_suite_runs_every_part_and_reports_every_row(tmp_path):
    out = tmp_path / "tiny.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_suite.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    data = json.loads(out.read_text())
    assert data["tiny"] is True and data["device"] == "cpu"
    assert isinstance(data["wall_s"], float) and isinstance(data["budget_s"], float)
    assert [r["id"] for r in data["rows"]] == ROWS
    for row in data["rows"]:
        for key, kind in ROW_KEYS.items():
            assert isinstance(row[key], kind), (row["id"], key, row[key])
        assert row["value"] is None or isinstance(row["value"], (int, float)), row
        assert row["status"] in ("ok", "budget exhausted"), row  # "error" or "skipped" would be a bug on CPU
        if row["value"] is None:
            assert row["status"] == "budget exhausted" and row["result"] == "budget exhausted", row
        elif row["id"] in TARGETED:
            assert row["target"] != "-" and row["result"] == "n/a on CPU", row
        else:
            assert row["target"] == "-" and row["result"] == "info", row
    for part in data["parts"].values():
        assert {"killed", "exitcode", "wall_s", "budget_s"} <= set(part)

    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if [c.strip() for c in line.split("|")] == COLUMNS)
    table = {cells[0]: cells for cells in ([c.strip() for c in line.split("|")] for line in lines[header + 2:])
             if len(cells) == len(COLUMNS)}
    by_id = {r["id"]: r for r in data["rows"]}
    for row_id in ROWS:
        assert row_id in table, f"{row_id} missing from the printed table"
        assert table[row_id][3:5] == [by_id[row_id]["target"], by_id[row_id]["result"]]


def test_bench_train_compares_model_variants() -> None:
    """`bench/train.py --set ... --vs ...`: one line per variant, the first the plain one (ratio ×1.00), each
    variant named with its changes; a key that is not an AVConfig field exits non-zero naming it."""
    cmd = [sys.executable, str(ROOT / "bench" / "train.py"), "--device", "cpu", "--batch", "2", "--steps", "1",
           "--warmup", "0", "--set", "dim=16", "--set", "dec_dim=16", "--set", "depth=1", "--set", "dec_depth=1",
           "--vs", "drop_rule=masked", "--vs", "drop_rule=masked,dec_dim=8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT / "bench")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3 and "×1.00" in lines[0]
    assert " eager on " in lines[0] and " eager drop_rule=masked on " in lines[1]
    assert " eager drop_rule=masked,dec_dim=8 on " in lines[2]
    bad = subprocess.run(cmd[:2] + ["--set", "nope=1"], capture_output=True, text=True, timeout=300, cwd=ROOT / "bench")
    assert bad.returncode != 0 and "'nope=1': expected KEY=VALUE with KEY one of" in bad.stderr
