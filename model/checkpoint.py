"""Training checkpoints: the format, atomic save, safe load (`weights_only=True`), resume, a model from one.

A checkpoint is a dict (docs/formats.md): "format", "avtok_version", "model" (state dict),
"ema" (state dict or None), "optimizer", "scaler", "config" (AVConfig as a plain dict), "train_config",
"step", "epoch", "data" (sampler position), "rng" (torch CPU/CUDA states), "tokenizers"
({"image": {...}, "audio": {...}} copied from the token index) and "metrics" (last logged values).
Files are `ckpt-{step}.pt`; `last.pt` is a symlink (a copy where links are unsupported) replaced
atomically, so it only ever names a complete file. Resuming takes `last.pt`, or, when that is missing
or unreadable, the newest `ckpt-*.pt` that loads; pruning (`keep_last`) never removes the file `last.pt`
names.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import AVConfig
from .files import avtok_version, temp_path_for
from .transformer import AVTransformer

FORMAT = "avtok-checkpoint/1"
REQUIRED = ("model", "config", "step", "tokenizers")
RESUMABLE = ("optimizer", "scaler", "train_config")
# Settings a resumed run must share with the checkpoint (others, like steps or eval cadence, may change).
RESUME_KEYS = ("preset", "model_overrides", "batch_size", "lr", "blr", "weight_decay", "betas", "clip", "ema",
               "ema_decay", "seed", "warmup_steps")


class CheckpointError(ValueError):
    """A file that is not a usable avtok checkpoint; the message names the file and the problem."""


def save_checkpoint(ckpt: dict[str, Any], folder: str | os.PathLike, step: int, keep_last: int = 0) -> Path:
    """Write `folder/ckpt-{step}.pt` atomically, then point `folder/last.pt` at it.

    `keep_last > 0` removes older `ckpt-*.pt` beyond the newest `keep_last`. Returns the file written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = {"format": FORMAT, "avtok_version": avtok_version(), **ckpt}
    path = folder / f"ckpt-{step}.pt"
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _point_last(folder, path)
    if keep_last > 0:
        prune_checkpoints(folder, keep_last)
    return path


def checkpoint_files(folder: str | os.PathLike) -> list[Path]:
    """`ckpt-*.pt` in `folder`, oldest step first."""
    return sorted((p for p in Path(folder).glob("ckpt-*.pt") if _step_of(p) >= 0), key=_step_of)


def prune_checkpoints(folder: str | os.PathLike, keep_last: int) -> list[Path]:
    """Remove all but the newest `keep_last` checkpoints, never the one `last.pt` names; returns the removed."""
    last = Path(folder) / "last.pt"
    named = last.resolve() if last.is_symlink() else None
    removed = []
    for p in checkpoint_files(folder)[:-keep_last]:
        if p.resolve() != named:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _step_of(p: Path) -> int:
    try:
        return int(p.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _point_last(folder: Path, target: Path) -> None:
    last = folder / "last.pt"
    tmp = temp_path_for(last)
    tmp.unlink()
    try:
        try:
            os.symlink(target.name, tmp)
        except OSError:  # no symlinks (some Windows/FUSE setups): a full copy, still renamed atomically
            shutil.copyfile(target, tmp)
        os.replace(tmp, last)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load an avtok checkpoint without executing pickled code; raise CheckpointError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # the unpickler raises many kinds (KeyError, UnpicklingError, RuntimeError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not an avtok checkpoint (torch.load refused it: {type(e).__name__}: {first})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not an avtok checkpoint (format {got!r}, expected {FORMAT!r})")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: avtok checkpoint without {missing}")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any] | str | os.PathLike, use_ema: bool = True) -> AVTransformer:
    """An AVTransformer (eval mode, CPU) with the checkpoint's EMA weights if present and asked for."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = AVConfig.from_dict(ckpt["config"])
    model = AVTransformer(cfg)
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    return model.eval()


# ------------------------------------------------------------------------------------- training state
@dataclass
class TrainState:
    """What a training checkpoint saves and a resume restores, besides the run's settings."""

    model: AVTransformer
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: list[torch.Tensor] | None  # fp32 copies of model.parameters(), in order
    step: int = 0
    bad_steps: int = 0  # non-finite steps skipped since the run began (all starts)
    data: dict[str, Any] = field(default_factory=dict)  # sampler position: {"position", "seed", "clips"}


def save_training(folder: str | os.PathLike, state: TrainState, train_config: dict[str, Any],
                  tokenizers: dict[str, Any], metrics: dict[str, Any], keep_last: int = 0) -> Path:
    """Write `state` as `folder/ckpt-{step}.pt` and point last.pt at it (see save_checkpoint)."""
    names = [n for n, _ in state.model.named_parameters()]
    ckpt = {
        "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict(),
        "ema": {n: e.clone() for n, e in zip(names, state.ema, strict=True)} if state.ema is not None else None,
        "config": state.model.cfg.to_dict(), "train_config": train_config, "step": state.step,
        "epoch": state.data["position"] / state.data["clips"], "data": state.data,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []},
        "tokenizers": tokenizers, "bad_steps": state.bad_steps, "metrics": metrics,
    }
    return save_checkpoint(ckpt, folder, state.step, keep_last=keep_last)


def restore_training(ckpt: dict[str, Any], state: TrainState) -> None:
    """Load a training checkpoint's weights, optimizer, scaler, EMA and counters into `state`."""
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scaler.load_state_dict(ckpt["scaler"])
    if state.ema is not None:
        for e, (name, _) in zip(state.ema, state.model.named_parameters(), strict=True):
            e.copy_(ckpt["ema"][name])
    state.step = int(ckpt["step"])
    state.bad_steps = int(ckpt.get("bad_steps", 0))
    state.data = dict(ckpt.get("data") or {})
    torch.set_rng_state(ckpt["rng"]["torch"])  # every step re-seeds anyway; restored for callers


@dataclass
class ResumePoint:
    """The checkpoint a resumed run continues from, and the newer files passed over (with why)."""

    path: Path
    ckpt: dict[str, Any]
    passed_over: list[str]


def find_resume_point(folder: str | os.PathLike) -> ResumePoint | None:
    """last.pt if it loads as a training checkpoint, else the newest ckpt-*.pt that does; None if the
    folder has no checkpoint at all. Raises CheckpointError when there are checkpoints but none loads."""
    folder = Path(folder)
    last = folder / "last.pt"
    candidates = ([last] if last.exists() or last.is_symlink() else []) + checkpoint_files(folder)[::-1]
    passed: list[str] = []
    for path in candidates:
        try:
            ckpt = load_checkpoint(path)
            missing = [k for k in RESUMABLE if k not in ckpt]
            if missing:
                raise CheckpointError(f"{path}: not a training checkpoint (no {missing})")
        except CheckpointError as e:
            passed.append(str(e))
            continue
        return ResumePoint(path, ckpt, passed)
    if passed:
        raise CheckpointError(f"{folder}: no checkpoint can be resumed from ({'; '.join(passed)})")
    return None


def tokenizer_records(index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The checkpoint's {"image": ..., "audio": ...} tokenizer records, from a token index."""
    out = {}
    for mod in ("image", "audio"):
        rec = dict(index.get(f"{mod}_tokenizer", {}))
        rec.setdefault("modality", mod)
        rec.setdefault("codebook_size", index.get(f"{mod}_codebook"))
        out[mod] = rec
    return out


def tokenizer_mismatch(ckpt: dict[str, Any], index: dict[str, Any]) -> str | None:
    """Why the token folder described by `index` was not made by the checkpoint's tokenizers (None if it was)."""
    for mod, rec in tokenizer_records(index).items():
        had = (ckpt.get("tokenizers") or {}).get(mod, {}).get("fingerprint")
        if had != rec.get("fingerprint"):
            return (f"{mod} tokenizer fingerprint of the shards ({str(rec.get('fingerprint'))[:16]}…) differs "
                    f"from the checkpoint's ({str(had)[:16]}…)")
        size = ckpt["config"].get(f"{mod}_codebook")
        if size is not None and rec.get("codebook_size") is not None and int(rec["codebook_size"]) != int(size):
            return f"{mod} codebook of the shards has {rec['codebook_size']} codes, the checkpoint's model {size}"
    return None


def resume_mismatch(ckpt: dict[str, Any], train_config: dict[str, Any], model_config: dict[str, Any],
                    index: dict[str, Any]) -> str | None:
    """Why a run with these settings and shards cannot continue `ckpt` (None if it can)."""
    old = ckpt.get("train_config", {})
    for key in RESUME_KEYS:
        a, b = old.get(key), train_config.get(key)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = list(a), list(b)
        if a != b:
            return f"{key} is {b!r} but the checkpoint was trained with {a!r}"
    ck_model = {k: v for k, v in ckpt["config"].items() if k != "grad_checkpoint"}
    if ck_model != {k: v for k, v in model_config.items() if k != "grad_checkpoint"}:
        return "the model config differs from the checkpoint's"
    return tokenizer_mismatch(ckpt, index)
