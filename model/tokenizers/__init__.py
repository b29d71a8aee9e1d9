"""Tokenizers: published VQGANs and the patch k-means tokenizer, behind one interface.

    tok = load_tokenizer("vqgan_f16_1024.ckpt", "taming")          # frames, 3×256×256 -> 256 tokens
    tok = load_tokenizer("specvqgan_vggsound.ckpt", "specvqgan")   # mels, 1×80×848 -> 265 tokens
    tok = load_tokenizer("kmeans.safetensors", "patch-kmeans", modality="image"|"audio")
    ids = tok.encode(frames_to_input(frames))      # LongTensor [B, 256], row-major over 16×16
    rec = output_to_frames(tok.decode(ids))        # uint8 [B, 256, 256, 3]

Every tokenizer has `kind`, `fingerprint` (sha256 of its weights), `codebook_size`, `grid`,
`channels`, `path`, `modality`, `to(device)`, a `fast` switch and `record()` (the dict token shards
store about it).
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
import torch

KINDS = ("taming", "specvqgan", "patch-kmeans")


class Tokenizer(Protocol):
    kind: str
    fingerprint: str
    codebook_size: int
    grid: tuple[int, int]
    channels: int
    path: str
    modality: str
    fast: bool

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, indices: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: str | torch.device) -> Tokenizer: ...

    def record(self) -> dict: ...


def load_tokenizer(path: str | os.PathLike, kind: str, modality: str | None = None) -> Tokenizer:
    """Load a tokenizer file. `modality` ("image"/"audio") picks the codebook of a patch-kmeans file."""
    if kind in ("taming", "specvqgan"):
        from .vqgan_tokenizer import load_vqgan_tokenizer

        return load_vqgan_tokenizer(path, kind)
    if kind == "patch-kmeans":
        from .patch_kmeans import load_patch_kmeans

        if modality not in ("image", "audio"):
            raise ValueError("a patch-kmeans file holds an image and an audio codebook: pass modality='image' "
                             f"or 'audio' (got {modality!r})")
        return load_patch_kmeans(path, modality)
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {list(KINDS)}")


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def frames_chw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> the same pixels as a [N, 3, H, W] view (no copy)."""
    t = _as_tensor(frames)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3], got {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2)


def pixels_to_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixel values (any shape) -> float32 in [-1, 1] (x/127.5 - 1), value by value."""
    return pixels.float() / 127.5 - 1.0


def frames_to_input(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, 256, 256, 3] -> float32 [N, 3, 256, 256] in [-1, 1] (x/127.5 - 1)."""
    return pixels_to_input(frames_chw(frames)).contiguous()


def mel_to_input(spec01: np.ndarray | torch.Tensor) -> torch.Tensor:
    """spec01 [N, 80, 848] (any float dtype) -> float32 [N, 1, 80, 848] = 2·spec01 - 1."""
    t = _as_tensor(spec01)
    if t.ndim != 3:
        raise ValueError(f"spec01 must be [N, 80, 848], got {tuple(t.shape)}")
    return (2.0 * t.float() - 1.0).unsqueeze(1).contiguous()


def output_to_frames(x: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in ~[-1, 1] -> uint8 [N, H, W, 3] (clamp, (x+1)/2, ×255, round)."""
    x = x.detach().float().clamp(-1, 1)
    return ((x + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def output_to_spec01(y: torch.Tensor) -> np.ndarray:
    """[N, 1, 80, 848] -> float32 [N, 80, 848] = (y + 1)/2, unclamped (what the MelGAN vocoder takes)."""
    return ((y.detach().float() + 1.0) / 2.0).squeeze(1).cpu().numpy()


__all__ = ["KINDS", "Tokenizer", "load_tokenizer", "frames_chw", "frames_to_input", "mel_to_input",
           "output_to_frames", "output_to_spec01", "pixels_to_input"]
