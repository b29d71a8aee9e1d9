"""Patch k-means tokenizer: a codebook of 16×16 patches, fit on the data at hand in seconds.

encode = nearest centroid (squared L2, fp32) per 16×16 patch, row-major over the patch grid (16×16
for 3×256×256 frames, 5×53 for 1×80×848 mels, the same grids as the VQGANs); decode = paste the
centroids. One safetensors file (no pickle) holds both codebooks: tensors `image.centroids` [K, 768]
and `audio.centroids` [K, 256] plus string metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write_bytes
from ..geometry import FRAME_SIZE, MEL_SHAPE
from .checkpoint_io import CheckpointLoadError, weights_fingerprint

FORMAT = "avtok-patch-kmeans/1"
PATCH = 16
# modality -> (channels, input H×W)
MODALITIES: dict[str, tuple[int, tuple[int, int]]] = {"image": (3, (FRAME_SIZE, FRAME_SIZE)), "audio": (1, MEL_SHAPE)}


def to_patches(x: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)·(W/p), C·p·p], patches row-major over the grid."""
    b, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    x = x[:, :, : gh * patch, : gw * patch].reshape(b, c, gh, patch, gw, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * patch * patch)


def from_patches(p: torch.Tensor, channels: int, grid: tuple[int, int], patch: int = PATCH) -> torch.Tensor:
    """Inverse of to_patches: [B, gh·gw, C·p·p] -> [B, C, gh·p, gw·p]."""
    b = p.shape[0]
    gh, gw = grid
    x = p.reshape(b, gh, gw, channels, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, gh * patch, gw * patch)


def nearest(points: torch.Tensor, centroids: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Index of the nearest centroid per row (squared L2 in fp32, first index on ties)."""
    c = centroids.float()
    c2 = (c * c).sum(1)
    out = torch.empty(points.shape[0], dtype=torch.long, device=points.device)
    for s in range(0, points.shape[0], chunk):
        p = points[s:s + chunk].float()
        d = (p * p).sum(1, keepdim=True) + c2 - 2 * (p @ c.t())
        out[s:s + chunk] = d.argmin(1)
    return out


def kmeans_pp_init(points: torch.Tensor, k: int, generator: torch.Generator, per_round: int = 32) -> torch.Tensor:
    """k-means++ seeding (centres drawn with probability ∝ squared distance to the nearest centre so far).
    Once there are many centres, up to `per_round` (at most 1/8 of those chosen) are drawn per distance
    update, so that the update is one matmul instead of k memory-bound vector passes."""
    n = points.shape[0]
    p2 = (points * points).sum(1)
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    d2 = (p2 - 2 * points @ points[first] + p2[first]).clamp(min=0)
    while len(chosen) < k:
        m = max(1, min(per_round, len(chosen) // 8, k - len(chosen)))
        positive = int((d2 > 0).sum())
        if positive == 0:  # fewer distinct points than k: duplicates, the first one wins every tie
            idx = torch.randint(n, (m,), generator=generator)
        else:
            idx = torch.multinomial(d2, min(m, positive), replacement=False, generator=generator)
        chosen += idx.tolist()
        c = points[idx]
        d_new = (p2[:, None] - 2 * points @ c.t() + (c * c).sum(1)[None]).clamp(min=0)
        d2 = torch.minimum(d2, d_new.min(1).values)
    return points[torch.tensor(chosen[:k])].clone()


def kmeans(points: torch.Tensor, k: int, iters: int = 8, seed: int = 0) -> torch.Tensor:
    """k-means++ then `iters` Lloyd steps in torch; empty clusters are re-seeded at the worst-fit points."""
    g = torch.Generator().manual_seed(seed)
    points = points.float()
    centroids = kmeans_pp_init(points, k, g)
    for _ in range(iters):
        assign = nearest(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).float()
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            err = ((points - centroids[assign]) ** 2).sum(1)
            worst = torch.topk(err, int(empty.sum())).indices
            centroids[empty] = points[worst]
    return centroids


class PatchKMeansTokenizer:
    """One modality's codebook behind the tokenizer interface (`fast` is accepted and changes nothing)."""

    kind = "patch-kmeans"

    def __init__(self, centroids: torch.Tensor, modality: str, path: str, fingerprint: str):
        channels, size = MODALITIES[modality]
        self.centroids = centroids.float()
        self.modality, self.path, self.fingerprint = modality, path, fingerprint
        self.channels, self.input_size = channels, size
        self.grid = (size[0] // PATCH, size[1] // PATCH)
        self.codebook_size = int(centroids.shape[0])
        self.device = torch.device("cpu")
        self.fast = False

    def to(self, device: str | torch.device) -> PatchKMeansTokenizer:
        self.device = torch.device(device)
        self.centroids = self.centroids.to(self.device)
        return self

    def record(self) -> dict:
        return {"kind": self.kind, "fingerprint": self.fingerprint, "path": self.path,
                "modality": self.modality, "codebook_size": self.codebook_size}

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        want = (self.channels, *self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"patch-kmeans {self.modality} tokenizer expects [B, {', '.join(map(str, want))}], "
                             f"got {tuple(x.shape)}")
        p = to_patches(x.to(self.device, torch.float32))
        b, n, d = p.shape
        return nearest(p.reshape(b * n, d), self.centroids).view(b, n)

    @torch.inference_mode()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        n = self.grid[0] * self.grid[1]
        if indices.ndim != 2 or indices.shape[1] != n:
            raise ValueError(f"patch-kmeans {self.modality} tokenizer decodes [B, {n}], got {tuple(indices.shape)}")
        p = self.centroids[indices.to(self.device, torch.long)]
        return from_patches(p, self.channels, self.grid)


def sample_patches(x: torch.Tensor, max_points: int, generator: torch.Generator) -> torch.Tensor:
    """Rows [C·16·16] of the 16×16 patches of `x` [N, C, H, W] (any dtype): all of them in `to_patches`
    order, or, when there are more than `max_points`, those a `randperm` of that order puts first, cut out
    one by one (a large uint8 batch is never converted or copied whole)."""
    b, c, h, w = x.shape
    gh, gw = h // PATCH, w // PATCH
    total = b * gh * gw
    if total <= max_points:
        return to_patches(x).reshape(total, c * PATCH * PATCH)
    idx = torch.randperm(total, generator=generator)[:max_points]
    img, cell = (idx // (gh * gw)).tolist(), (idx % (gh * gw)).tolist()
    return torch.stack([x[i, :, (q // gw) * PATCH:(q // gw + 1) * PATCH, (q % gw) * PATCH:(q % gw + 1) * PATCH]
                        .reshape(-1) for i, q in zip(img, cell, strict=True)])


def fit_codebook(x: torch.Tensor, k: int = 1024, iters: int = 8, max_points: int = 16384,
                 seed: int = 0, to_input: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Centroids [k, C·16·16] of the 16×16 patches of `x` [N, C, H, W] (a random sample of at most
    `max_points` patches, so that fitting stays at seconds on a CPU). `to_input`: a value-by-value map of
    raw `x` (uint8 frames, `pixels_to_input`) to the model's input scale, applied to the sampled patches."""
    pts = sample_patches(x, max_points, torch.Generator().manual_seed(seed))
    return kmeans(to_input(pts) if to_input is not None else pts, k, iters=iters, seed=seed)


def save_patch_kmeans(path: str | os.PathLike, image_centroids: torch.Tensor, audio_centroids: torch.Tensor,
                      info: dict | None = None) -> Path:
    """Write both codebooks to one safetensors file, atomically; equal codebooks give equal bytes."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "patch": str(PATCH), "info": json.dumps(info or {}, sort_keys=True)}
    raw = save({"image.centroids": image_centroids.float().contiguous().cpu(),
                "audio.centroids": audio_centroids.float().contiguous().cpu()}, metadata=meta)
    atomic_write_bytes(path, _sorted_metadata(raw))
    return path


def _sorted_metadata(raw: bytes) -> bytes:
    """The same safetensors bytes with the header's metadata map in sorted key order.

    safetensors writes that map in a hash order that changes from process to process; the sorted header
    is no longer than the original, so it is padded with spaces, which the format allows."""
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:
        return raw
    return raw[:8] + text + b" " * (n - len(text)) + raw[8 + n:]


def load_patch_kmeans(path: str | os.PathLike, modality: str) -> PatchKMeansTokenizer:
    """The `modality` ("image"/"audio") codebook of a patch-kmeans file."""
    from safetensors import safe_open

    path = Path(path).resolve()
    if modality not in MODALITIES:
        raise ValueError(f"modality must be 'image' or 'audio', got {modality!r}")
    if not path.is_file():
        raise CheckpointLoadError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
            key = f"{modality}.centroids"
            centroids = f.get_tensor(key) if key in names else None
    except Exception as e:  # safetensors raises its own error types for non-safetensors bytes
        raise CheckpointLoadError(f"{path}: not a patch-kmeans safetensors file ({e})") from e
    if meta.get("format") != FORMAT or centroids is None:
        raise CheckpointLoadError(f"{path}: not an avtok patch-kmeans file (format {meta.get('format')!r}, "
                                  f"tensors {sorted(names)})")
    channels, _ = MODALITIES[modality]
    if centroids.ndim != 2 or centroids.shape[1] != channels * PATCH * PATCH:
        raise CheckpointLoadError(f"{path}: {key} has shape {tuple(centroids.shape)}, expected [K, "
                                  f"{channels * PATCH * PATCH}]")
    fp = weights_fingerprint({key: centroids}, extra=f"{FORMAT}|patch={PATCH}|")
    return PatchKMeansTokenizer(centroids, modality, str(path), fp)


def fit_patch_kmeans(frames: np.ndarray | torch.Tensor, mels: np.ndarray | torch.Tensor, out: str | os.PathLike,
                     k: int = 1024, iters: int = 8, max_points: int = 16384, seed: int = 0) -> Path:
    """Fit both codebooks from uint8 frames [N, 256, 256, 3] and spec01 mels [M, 80, 848]; save to `out`."""
    from . import frames_chw, mel_to_input, pixels_to_input

    img = fit_codebook(frames_chw(frames), k, iters, max_points, seed, to_input=pixels_to_input)
    aud = fit_codebook(mel_to_input(mels), k, iters, max_points, seed + 1)
    info = {"k": k, "iters": iters, "max_points": max_points, "seed": seed, "frames": int(len(frames)),
            "mels": int(len(mels))}
    return save_patch_kmeans(out, img, aud, info)
