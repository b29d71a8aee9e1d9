"""`VQGANTokenizer`: a loaded taming/SpecVQGAN checkpoint behind the avtok tokenizer interface."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ..geometry import MEL_SHAPE
from .checkpoint_io import CheckpointLoadError, load_state_dict_file, weights_fingerprint
from .vqgan import SPECVQGAN_VGGSOUND, TAMING_F16_1024, VQGAN, VQGANConfig, exact_numerics, fast_dtype

# kind -> (config, modality, input size H×W)
KINDS: dict[str, tuple[VQGANConfig, str, tuple[int, int]]] = {
    "taming": (TAMING_F16_1024, "image", (256, 256)),
    "specvqgan": (SPECVQGAN_VGGSOUND, "audio", MEL_SHAPE),
}


class VQGANTokenizer:
    """encode(x [B,C,H,W] in [-1,1]) -> LongTensor [B, H'*W'] row-major; decode(indices) -> [B,C,H,W].

    `fast = False` (default): fp32, TF32 off, the reference op order: the published code's indices.
    `fast = True`: autocast convs (fp16 on GPU, bf16 on CPU; `fast_dtype` overrides), channels_last on
    GPU, SDPA attention and fused SiLU; the nearest-codebook search stays fp32, and a batch whose z
    overflowed is redone in fp32.
    """

    def __init__(self, model: VQGAN, kind: str, path: str, fingerprint: str, input_size: tuple[int, int],
                 modality: str):
        self.model = model.eval().requires_grad_(False)
        self.kind, self.path, self.fingerprint, self.modality = kind, path, fingerprint, modality
        self.input_size = tuple(input_size)
        self.grid = model.grid_for(*input_size)
        self.codebook_size = model.cfg.n_embed
        self.channels = model.cfg.in_channels
        self.device = torch.device("cpu")
        self._fast = False
        self.fast_dtype: torch.dtype | None = None  # None: fp16 on GPU, bf16 on CPU (vqgan.fast_dtype)

    @property
    def fast(self) -> bool:
        return self._fast

    @fast.setter
    def fast(self, value: bool) -> None:
        self._fast = bool(value)
        self.model.set_fast(self._fast)
        self._apply_layout()

    @property
    def channels_last(self) -> bool:
        # cuDNN's fp16/bf16 tensor-core convs want NHWC; on CPU, NHWC with bf16 measured no faster than
        # NCHW (bench/tokenizing.py --explore), so the CPU keeps the reference layout.
        return self._fast and self.device.type == "cuda"

    def _apply_layout(self) -> None:
        self.model.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def to(self, device: str | torch.device) -> VQGANTokenizer:
        self.device = torch.device(device)
        self.model.to(self.device)
        self._apply_layout()
        return self

    def record(self) -> dict:
        """What token shards store about this tokenizer (docs/formats.md, "Token shards")."""
        return {"kind": self.kind, "fingerprint": self.fingerprint, "path": self.path,
                "modality": self.modality, "codebook_size": self.codebook_size}

    def _check_input(self, x: torch.Tensor) -> None:
        want = (self.channels, *self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"{self.kind} tokenizer expects [B, {', '.join(map(str, want))}] in [-1, 1], "
                             f"got {tuple(x.shape)}")

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.fast_dtype or fast_dtype(self.device)
        if dtype == torch.float32:  # nothing to cast to on this CPU (see vqgan.fast_dtype)
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x = x.to(self.device, torch.float32)
        m = self.model
        if not self._fast:
            with exact_numerics():
                return m.encode_indices(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            z = m.quant_conv(m.encoder(x))
        with exact_numerics():  # distances in true fp32 (no autocast, no TF32)
            if not bool(torch.isfinite(z).all()):  # fp16 overflow: this batch again in fp32
                return m.encode_indices(x.contiguous())
            return m.quantize.indices(z.float())

    @torch.inference_mode()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        n = self.grid[0] * self.grid[1]
        if indices.ndim != 2 or indices.shape[1] != n:
            raise ValueError(f"{self.kind} tokenizer decodes [B, {n}] indices, got {tuple(indices.shape)}")
        indices = indices.to(self.device, torch.long)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"indices outside [0, {self.codebook_size})")
        if not self._fast:
            with exact_numerics():
                return self.model.decode_indices(indices, self.grid)
        with self._autocast():
            return self.model.decode_indices(indices, self.grid).float().contiguous()


def load_vqgan_tokenizer(path: str | os.PathLike, kind: str) -> VQGANTokenizer:
    """Load a taming (`kind="taming"`) or SpecVQGAN (`kind="specvqgan"`) checkpoint, checked key by key."""
    if kind not in KINDS:
        raise ValueError(f"unknown VQGAN kind {kind!r}; expected one of {sorted(KINDS)}")
    base_cfg, modality, input_size = KINDS[kind]
    path = Path(path).resolve()
    sd = load_state_dict_file(path)
    conv_in = sd.get("encoder.conv_in.weight")
    codebook = sd.get("quantize.embedding.weight")
    if conv_in is None or codebook is None:
        raise CheckpointLoadError(f"{path}: not a VQGAN checkpoint (no encoder.conv_in.weight / "
                                  "quantize.embedding.weight)")
    if conv_in.shape[1] != base_cfg.in_channels:
        other = [k for k, (c, _, _) in KINDS.items() if c.in_channels == conv_in.shape[1]]
        hint = f"; it looks like a {other[0]!r} checkpoint" if other else ""
        raise CheckpointLoadError(f"{path}: has {conv_in.shape[1]} input channel(s), a {kind!r} tokenizer needs "
                                  f"{base_cfg.in_channels}{hint}")
    cfg = VQGANConfig(**{**base_cfg.__dict__, "n_embed": int(codebook.shape[0]), "extra": {}})
    with torch.device("meta"):  # shapes only: building it with the random init the file replaces took 0.6-0.9 s
        model = VQGAN(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise CheckpointLoadError(f"{path}: keys do not match a {kind} VQGAN: {len(missing)} missing "
                                  f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    bad = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in expected.items() if sd[k].shape != v.shape]
    if bad:
        raise CheckpointLoadError(f"{path}: {len(bad)} tensors have the wrong shape, e.g. "
                                  + ", ".join(f"{k} {got} (expected {want})" for k, got, want in bad[:3]))
    weights = {k: sd[k] for k in expected}
    model.load_state_dict({k: v.float() for k, v in weights.items()}, assign=True)
    return VQGANTokenizer(model, kind, str(path), weights_fingerprint(weights), input_size, modality)
