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
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


class TensorBoardSink:
    """Events under OUT/tensorboard (torch.utils.tensorboard; written by its own background thread)."""

    def __init__(self, out: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events an abandoned continuation wrote after the resumed step are hidden
        self.w = SummaryWriter(log_dir=str(out / "tensorboard"),
                               purge_step=resume_step + 1 if resume_step else None)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, v in values.items():
            self.w.add_scalar(tag, v, step)

    def text(self, tag: str, text: str) -> None:
        self.w.add_text(tag, text, 0)

    def media(self, step: int, audio: dict[str, np.ndarray], images: dict[str, np.ndarray], sample_rate: int) -> None:
        for tag, wave in audio.items():
            self.w.add_audio(tag, torch.from_numpy(wave)[None], step, sample_rate=sample_rate)
        for tag, img in images.items():
            self.w.add_image(tag, img, step, dataformats="HWC")

    def close(self) -> None:
        self.w.close()


class WandbSink:
    """A W&B run in offline mode under OUT/wandb (sync later with `wandb sync`); resumes the same run id."""

    def __init__(self, out: Path, config: dict[str, Any], resume: bool) -> None:
        try:
            import wandb
        except ImportError:
            raise ValueError('--log wandb needs the wandb package: pip install "avtok[wandb]"') from None
        id_file = out / "wandb-run-id"
        run_id = id_file.read_text().strip() if resume and id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        self.wandb = wandb
        self.run = wandb.init(project="avtok", dir=str(out), id=run_id, resume="allow", mode="offline",
                              config=config, name=out.name)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def text(self, tag: str, text: str) -> None:
        pass  # the config went to wandb.init

    def media(self, step: int, audio: dict[str, np.ndarray], images: dict[str, np.ndarray], sample_rate: int) -> None:
        logged: dict[str, Any] = {k: self.wandb.Audio(v, sample_rate=sample_rate) for k, v in audio.items()}
        logged.update({k: self.wandb.Image(v) for k, v in images.items()})
        self.run.log(logged, step=step)

    def close(self) -> None:
        self.run.finish()


class RunLog:
    """metrics.jsonl rows and the chosen dashboard's scalars and previews; a no-op on ranks other than 0."""

    def __init__(self, out: str | os.PathLike, kind: str = "none", enabled: bool = True,
                 config: dict[str, Any] | None = None, resume_step: int | None = None) -> None:
        if kind not in LOGGERS:
            raise ValueError(f"--log must be one of {', '.join(LOGGERS)}, got {kind!r}")
        self.out, self.enabled = Path(out), enabled
        self.sink: TensorBoardSink | WandbSink | None = None
        if enabled and kind == "tensorboard":
            self.sink = TensorBoardSink(self.out, resume_step)
        elif enabled and kind == "wandb":
            self.sink = WandbSink(self.out, config or {}, resume_step is not None)
        if self.sink is not None and config is not None:
            self.sink.text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True, default=str) + "\n```")

    def start(self, step: int, resumed_from: str | None) -> None:
        if self.enabled:
            append_metrics(self.out, {"step": step, "start": {"resumed_from": resumed_from,
                                                              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}})

    def train_row(self, row: TrainRow) -> None:
        if not self.enabled:
            return
        append_metrics(self.out, asdict(row))
        if self.sink is not None:
            self.sink.scalars(row.step, {f"train/{k}": v for k, v in asdict(row).items()
                                         if k != "step" and v is not None})

    def eval(self, step: int, scores: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_metrics(self.out, {"step": step, "eval": scores})
        if self.sink is not None:
            self.sink.scalars(step, {f"eval/{k}": v for k, v in scores.items() if k != "step"})

    def previews(self, step: int, previews: list[Any], sample_rate: int) -> None:
        """Preview objects with name, wave, mel and image (model/previews.py)."""
        if self.enabled and self.sink is not None:
            self.sink.media(step, {f"i2a/{p.name}/audio": p.wave for p in previews},
                            {**{f"i2a/{p.name}/mel": p.mel for p in previews},
                             **{f"a2i/{p.name}/image": p.image for p in previews}}, sample_rate)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
            self.sink = None
