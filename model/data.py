"""In-memory token data for training: one tensor per split, a deterministic global sample stream.

The stream is a concatenation of epochs; epoch e is a permutation of the clips plus one random frame
(of 10) per clip, both drawn from a generator seeded by (seed, e). A step of global batch B reads
stream positions [step·B, (step+1)·B); rank r, micro-batch m takes the contiguous chunk number
r·accum + m. Every rank thus gets exactly B/world samples per step whatever the shard sizes, and the
whole run is a function of (seed, position): resuming needs only the position.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from avtok.model.geometry import N_FRAMES
from torch import Tensor

from .token_shards import load_tokens


def seed_for(*parts: Any) -> int:
    """A stable 63-bit seed from any printable parts (same on every machine and Python run)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass
class SplitData:
    """One split in memory: image [N, 10, 256] and audio [N, 265] as int16 (int32 if a codebook > 32767)."""

    image: Tensor
    audio: Tensor
    video_ids: list[str]
    index: dict[str, Any]

    def __len__(self) -> int:
        return self.image.shape[0]

    def gather(self, clips: Tensor, frames: Tensor, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """Long image tokens [B, 256] (frame `frames[i]` of clip `clips[i]`) and audio tokens [B, 265]."""
        img = self.image[clips, frames].long()
        aud = self.audio[clips].long()
        if torch.device(device).type == "cuda":
            return img.pin_memory().to(device, non_blocking=True), aud.pin_memory().to(device, non_blocking=True)
        return img.to(device), aud.to(device)


def load_split(folder: str | os.PathLike, split: str, verify_checksums: bool = True) -> SplitData:
    """Read all token shards of `split` (raises ShardError for a bad folder or an empty split)."""
    td = load_tokens(folder, split=split, verify_checksums=verify_checksums)
    big = max(td.index["image_codebook"], td.index["audio_codebook"]) > 32767
    dt = np.int32 if big else np.int16
    return SplitData(torch.from_numpy(td.image.astype(dt)), torch.from_numpy(td.audio.astype(dt)),
                     td.video_ids, td.index)


class SampleStream:
    """Global stream of (clip, frame) pairs over `n` clips; see the module docstring."""

    def __init__(self, n: int, seed: int, frames: int = N_FRAMES) -> None:
        if n <= 0:
            raise ValueError("no clips to train on")
        self.n, self.seed, self.frames = n, seed, frames
        self._cache: tuple[int, Tensor, Tensor] | None = None

    def epoch(self, e: int) -> tuple[Tensor, Tensor]:
        """(clip permutation [n], frame per slot [n]) of epoch e."""
        if self._cache is None or self._cache[0] != e:
            g = torch.Generator().manual_seed(seed_for("epoch", self.seed, e))
            perm = torch.randperm(self.n, generator=g)
            frames = torch.randint(0, self.frames, (self.n,), generator=g)
            self._cache = (e, perm, frames)
        return self._cache[1], self._cache[2]

    def take(self, start: int, count: int) -> tuple[Tensor, Tensor]:
        """Clips and frames at stream positions [start, start + count) (may span epochs)."""
        clips, frames = [], []
        pos, end = start, start + count
        while pos < end:
            e, off = divmod(pos, self.n)
            k = min(end - pos, self.n - off)
            perm, fr = self.epoch(e)
            clips.append(perm[off:off + k])
            frames.append(fr[off:off + k])
            pos += k
        return torch.cat(clips), torch.cat(frames)


def chunk_start(step: int, global_batch: int, micro: int, rank: int, accum: int, m: int) -> int:
    """Stream position of rank `rank`'s micro-batch `m` at `step`."""
    return step * global_batch + (rank * accum + m) * micro
