"""`AVConfig`: the audio-visual masked transformer's shape and masking choices, with presets.

Open choices of the paper, with their defaults (see README "avtok train"):
* `drop_rule="extend"`: always drop floor(drop_ratio·N) tokens per modality, masked ones first; a dropped
  visible token counts as masked (effective ratio max(r, drop_ratio)); shapes stay static. "clamp" drops
  only masked tokens, min(floor(drop_ratio·N), fewest masked in the batch): MAGE-like, variable length.
  "masked" drops every masked token, in training and in sampling (MAE): the encoder sees only visible
  tokens and `drop_ratio` is unused (samples of similar length are encoded together: a host sync per
  group).
* `detach_tied=False`: the output layer uses the live embedding weight (MaskGIT); True detaches it (MAGE).
* `ratio_per="sample"`: one mask ratio per sample and modality; "batch" draws one per batch (MAGE).
* `pos_init="normal"` (MAGE): position tables start as N(0, 0.02); "sincos" starts them as 2-D sine-cosine
  codes of (row, column) on each modality's grid (MAE's table, scaled to the same RMS) and trains them from
  there, so that positions of one row or column start alike.
* `full_mask_prob=0.0` (paper): with this probability a sample gets one modality (image or audio, even
  odds) fully masked, the "condition drop" of MAR/RCG/open-muse; it teaches the pure cross-modal and
  unconditional cases (image→audio, CFG's uncond pass) that the truncated Gaussian rarely shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .geometry import AUDIO_TOKENS, IMAGE_TOKENS

DROP_RULES = ("extend", "clamp", "masked")


@dataclass(frozen=True)
class AVConfig:
    image_codebook: int = 1024
    audio_codebook: int = 1024
    image_tokens: int = IMAGE_TOKENS
    audio_tokens: int = AUDIO_TOKENS
    dim: int = 1024  # encoder width = embedding-table width
    depth: int = 24
    heads: int = 16
    dec_dim: int = 1024
    dec_depth: int = 8
    dec_heads: int = 16
    mlp_ratio: float = 4.0
    dropout: float = 0.1  # attention and proj/MLP dropout (MAGE)
    mask_min: float = 0.2  # truncated Gaussian for the mask ratio
    mask_max: float = 1.0
    mask_mu: float = 0.7
    mask_std: float = 0.25
    drop_ratio: float = 0.5
    drop_rule: str = "extend"  # one of DROP_RULES
    ratio_per: str = "sample"  # "sample" | "batch"
    detach_tied: bool = False
    full_mask_prob: float = 0.0
    pos_init: str = "normal"  # "normal" | "sincos"
    label_smoothing: float = 0.1
    grad_checkpoint: bool = False

    def __post_init__(self) -> None:
        if self.drop_rule not in DROP_RULES:
            raise ValueError(f"drop_rule must be one of {DROP_RULES}, got {self.drop_rule!r}")
        if self.pos_init not in ("normal", "sincos"):
            raise ValueError(f"pos_init must be 'normal' or 'sincos', got {self.pos_init!r}")
        if self.pos_init == "sincos" and (self.dim % 4 or self.dec_dim % 4
                                          or (self.image_tokens, self.audio_tokens) != (IMAGE_TOKENS, AUDIO_TOKENS)):
            raise ValueError("pos_init='sincos' needs dim and dec_dim divisible by 4 and the full token grids "
                             f"({IMAGE_TOKENS} + {AUDIO_TOKENS}), got {self.dim}, {self.dec_dim}, "
                             f"{self.image_tokens} + {self.audio_tokens}")
        if self.ratio_per not in ("sample", "batch"):
            raise ValueError(f"ratio_per must be 'sample' or 'batch', got {self.ratio_per!r}")
        if not 0.0 <= self.mask_min < self.mask_max <= 1.0:
            raise ValueError(f"need 0 <= mask_min < mask_max <= 1, got {self.mask_min}, {self.mask_max}")
        if not 0.0 <= self.drop_ratio < 1.0:
            raise ValueError(f"drop_ratio must be in [0, 1), got {self.drop_ratio}")
        for name in ("image_codebook", "audio_codebook", "image_tokens", "audio_tokens", "dim", "depth", "heads",
                     "dec_dim", "dec_depth", "dec_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("dropout", "full_mask_prob", "label_smoothing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not (self.mlp_ratio > 0 and self.mask_std > 0):
            raise ValueError(f"mlp_ratio and mask_std must be positive, got {self.mlp_ratio}, {self.mask_std}")
        if self.dim % self.heads or self.dec_dim % self.dec_heads:
            raise ValueError("dim and dec_dim must be divisible by their head counts")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AVConfig:
        """Build from a plain dict (e.g. a checkpoint's "config"); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown AVConfig keys: {sorted(unknown)}")
        return cls(**d)


PRESETS: dict[str, dict[str, Any]] = {
    # CPU tests and the demo. No dropout: on CPU, attention dropout forces SDPA's 4× slower math path.
    "tiny": dict(dim=64, depth=2, heads=4, dec_dim=64, dec_depth=2, dec_heads=4, dropout=0.0),
    # MAGE-B sizes.
    "base": dict(dim=768, depth=12, heads=12, dec_dim=768, dec_depth=8, dec_heads=16),
    # MAGE-L sizes: 409.4M parameters with two 1025-row tables.
    "large": dict(dim=1024, depth=24, heads=16, dec_dim=1024, dec_depth=8, dec_heads=16),
}


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """KEY=VALUE strings (`avtok train --set`, bench/train.py) → AVConfig overrides, each value typed as its
    field (ranges are checked when the config is built). Raises ValueError naming the item."""
    types = {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in fields(AVConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise ValueError(f"{item!r}: expected KEY=VALUE with KEY one of {sorted(types)}")
        try:
            out[key] = _typed(value.strip(), types[key])
        except ValueError:
            raise ValueError(f"{item!r}: {key} takes a {types[key]}, not {value!r}") from None
    return out


def _typed(value: str, kind: str) -> Any:
    if kind == "bool":
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(value)
        return value.lower() in ("true", "1", "yes")
    if kind == "int":
        return int(value)
    if kind == "float":
        x = float(value)
        if not math.isfinite(x):
            raise ValueError(value)
        return x
    return value


def preset(name: str, **overrides: Any) -> AVConfig:
    """The named preset with `overrides` (e.g. codebook sizes from the token index) applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(AVConfig(**PRESETS[name]), **overrides)
