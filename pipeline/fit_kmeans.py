"""`avtok tokenizer fit-kmeans`: fit the patch k-means codebooks on a sample of extracted clips."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .extracted import read_extracted_shard
from .tokenize import check_extracted


@dataclass
class FitSummary:
    clips: int
    k: int
    seconds: float
    out: str
    fingerprint_image: str
    fingerprint_audio: str

    def line(self) -> str:
        return (f"fit patch k-means (k={self.k}) on {self.clips} clips in {self.seconds:.1f} s → {self.out} "
                f"(image {self.fingerprint_image[:12]}, audio {self.fingerprint_audio[:12]})")


def sample_clips(extracted: str | os.PathLike, clips: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [n·10, 256, 256, 3] and mels [n, 80, 848] of up to `clips` clips, read from the
    extracted shards in a seeded random order (whole shards, so only the shards needed are opened)."""
    _, shards = check_extracted(Path(extracted))
    order = [p for _, p in shards]
    random.Random(seed).shuffle(order)
    frames, mels = [], []
    for path in order:
        for sample in read_extracted_shard(path, decode_audio=False):
            frames.append(sample.frames)
            mels.append(sample.mel)
            if len(mels) >= clips:
                break
        if len(mels) >= clips:
            break
    if not mels:
        raise ValueError(f"{extracted}: no clips to fit on")
    return np.concatenate(frames), np.stack(mels)


def fit_kmeans_from_extracted(extracted: str | os.PathLike, out: str | os.PathLike, k: int = 1024,
                              clips: int = 200, seed: int = 0, iters: int = 8,
                              max_points: int = 16384) -> FitSummary:
    """Sample clips, fit both codebooks (frames and mels), write one safetensors file to `out`."""
    from avtok.model.tokenizers import load_tokenizer
    from avtok.model.tokenizers.patch_kmeans import fit_patch_kmeans

    t0 = time.perf_counter()
    frames, mels = sample_clips(extracted, clips, seed)
    path = fit_patch_kmeans(frames, mels, out, k=k, iters=iters, max_points=max_points, seed=seed)
    img = load_tokenizer(path, "patch-kmeans", modality="image")
    aud = load_tokenizer(path, "patch-kmeans", modality="audio")
    return FitSummary(len(mels), k, time.perf_counter() - t0, str(path), img.fingerprint, aud.fingerprint)
