"""What a training run logs: `OUT/metrics.jsonl` (always) plus TensorBoard or W&B (`--log`), rank 0 only.

metrics.jsonl is append-only; nothing in it is ever rewritten. Rows:
* `{"step": k, "start": {...}}`: a start of `avtok train` at step k (0, or the step it resumed from).
* training rows (`TrainRow` fields) every `log_every` steps, and `{"step": k, "eval": {...}}` rows.
A run that died after logging step k + 3 but whose last checkpoint is step k logs steps k + 1.. again
when resumed; `read_metrics` therefore drops, at each start row of step k, the rows before it with a
step above k. Readers should use `read_metrics` (or apply the same rule).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"
LOGGERS = ("tensorboard", "wandb", "none")


@dataclass
class TrainRow:
    """One metrics.jsonl training row (and the scalars logged with it)."""

    step: int
    epoch: float  # samples seen / training clips
    loss: float  # mean training loss (label-smoothed masked CE) of the finite steps since the last row
    lr: float
    grad_norm: float  # before clipping, of the row's last step
    samples_per_s: float  # global, since the last row
    mfu: float | None  # model FLOPs utilisation; None where the peak is unknown (CPU without --peak-tflops)
    bad_steps: int  # non-finite steps skipped since the run began
    gpu_mem_gb: float | None  # peak allocated on this rank's GPU since the last row
    # masked-token NLL / accuracy and mask fraction per modality, of the row's last micro-batch
    nll_image: float
    acc_image: float
    mask_image: float
    nll_audio: float
    acc_audio: float
    mask_audio: float


def append_metrics(folder: str | os.PathLike, row: dict[str, Any]) -> None:
    with open(Path(folder) / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of `folder/metrics.jsonl` that belong to the run's history (see the module docstring)."""
    path = Path(folder) / METRICS
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if "start" in row:
            rows = [r for r in rows if r.get("step", 0) <= row["step"]]
        rows.append(row)
    return rows


class RunLog:
    """metrics.jsonl rows and the chosen dashboard's scalars; a no-op on ranks other than 0."""

    def __init__(self, out: str | os.PathLike, enabled: bool = True) -> None:
        self.out, self.enabled = Path(out), enabled

    def start(self, step: int, resumed_from: str | None, config: dict[str, Any]) -> None:
        if self.enabled:
            append_metrics(self.out, {"step": step, "start": {"resumed_from": resumed_from,
                                                              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}})

    def train_row(self, row: TrainRow) -> None:
        if self.enabled:
            append_metrics(self.out, asdict(row))

    def eval(self, step: int, scores: dict[str, Any]) -> None:
        if self.enabled:
            append_metrics(self.out, {"step": step, "eval": scores})

    def close(self) -> None:
        pass
