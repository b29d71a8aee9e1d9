"""Training checkpoints: atomic save, safe load (`weights_only=True`), and a model from a checkpoint.

A checkpoint is a dict (DESIGN §3 "Checkpoints"): "format", "avtok_version", "model" (state dict),
"ema" (state dict or None), "optimizer", "scaler", "config" (AVConfig as a plain dict), "train_config",
"step", "epoch", "data" (sampler position), "rng" (torch CPU/CUDA states), "tokenizers"
({"image": {...}, "audio": {...}} copied from the token index) and "metrics" (last logged values).
Files are `ckpt-{step}.pt`; `last.pt` is a symlink (a copy where links are unsupported) replaced
atomically, so it only ever names a complete file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .config import AVConfig
from .files import avtok_version, temp_path_for
from .transformer import AVTransformer

FORMAT = "avtok-checkpoint/1"
REQUIRED = ("model", "config", "step", "tokenizers")


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
        old = sorted(folder.glob("ckpt-*.pt"), key=_step_of)[:-keep_last]
        for p in old:
            if p != path:
                p.unlink(missing_ok=True)
    return path


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
