"""Masked-token NLL and accuracy: the one evaluator behind `avtok eval`'s token metrics and train's eval.

NLL is the mean cross-entropy (nats/token) of the true tokens at the masked positions only; accuracy
the fraction of those positions where the argmax is the true token.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data import SplitData, seed_for

CFG_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0)
DIRECTIONS = ("image2audio", "audio2image")
CONDITIONS = ("true", "masked", "shuffled")


class MaskedNLL:
    """Sums of NLL and correct argmax over masked positions, accumulated batch by batch."""

    def __init__(self) -> None:
        self.nll_sum, self.correct, self.count = 0.0, 0.0, 0

    def add(self, logits: torch.Tensor, target: torch.Tensor, masked: torch.Tensor | None = None) -> None:
        """logits [B, N, V], target [B, N], masked [B, N] bool (None = every position)."""
        if masked is not None:
            logits, target = logits[masked], target[masked]
        logits = logits.reshape(-1, logits.shape[-1]).float()
        target = target.reshape(-1)
        self.nll_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        self.correct += float((logits.argmax(-1) == target).sum())
        self.count += int(target.numel())

    @property
    def nll(self) -> float:
        return self.nll_sum / self.count

    @property
    def accuracy(self) -> float:
        return self.correct / self.count


@dataclass
class HeldOutScores:
    """Train's periodic eval on held-out clips, both directions at mask ratio 1.0 of the target."""

    step: int
    i2a_nll: float  # audio NLL given the whole image
    i2a_acc: float
    a2i_nll: float  # image NLL given the whole audio
    a2i_acc: float
    uncond_audio_nll: float  # audio NLL with both modalities masked (no condition)
    uncond_image_nll: float


@torch.no_grad()
def held_out_scores(model: Any, data: SplitData, n: int, batch: int, seed: int, device: torch.device,
                    step: int, autocast: contextlib.AbstractContextManager | None = None) -> HeldOutScores:
    """Scores of the first `n` clips of `data`, one fixed random frame per clip (the same every call)."""
    was_training = model.training
    model.eval()
    n = min(n, len(data))
    g = torch.Generator().manual_seed(seed_for("eval-frames", seed))
    frames = torch.randint(0, data.image.shape[1], (n,), generator=g)
    acc = {k: MaskedNLL() for k in ("i2a", "a2i", "uncond_audio", "uncond_image")}
    for s in range(0, n, batch):
        clips = torch.arange(s, min(n, s + batch))
        img, aud = data.gather(clips, frames[clips], device)
        yes_i, yes_a = torch.ones_like(img, dtype=torch.bool), torch.ones_like(aud, dtype=torch.bool)
        with autocast or contextlib.nullcontext():
            _, la = model.forward_logits(img, aud, yes_i, ~yes_a)
            li, _ = model.forward_logits(img, aud, ~yes_i, yes_a)
            ui, ua = model.forward_logits(img, aud, ~yes_i, ~yes_a)
        for key, logits, target in (("i2a", la, aud), ("a2i", li, img), ("uncond_audio", ua, aud),
                                    ("uncond_image", ui, img)):
            acc[key].add(logits, target)
    model.train(was_training)
    return HeldOutScores(step=step, i2a_nll=acc["i2a"].nll, i2a_acc=acc["i2a"].accuracy, a2i_nll=acc["a2i"].nll,
                         a2i_acc=acc["a2i"].accuracy, uncond_audio_nll=acc["uncond_audio"].nll,
                         uncond_image_nll=acc["uncond_image"].nll)


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation with no fixed point (n ≥ 2): every clip gets another clip's condition."""
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, -1)
    return perm


@torch.no_grad()
def _logits_for(model, direction: str, cond: torch.Tensor, cond_known: torch.Tensor, target: torch.Tensor,
                target_known: torch.Tensor) -> torch.Tensor:
    if direction == "image2audio":
        return model.forward_logits(cond, target, cond_known, target_known)[1]
    return model.forward_logits(target, cond, target_known, cond_known)[0]


@torch.no_grad()
def token_metrics(model, image: torch.Tensor, audio: torch.Tensor, batch: int = 32, seed: int = 0,
                  cfg_scales: tuple[float, ...] = CFG_SCALES) -> dict[str, Any]:
    """NLL/accuracy per direction × mask ratio (1.0, 0.5) × condition (true, masked, shuffled), the
    ΔNLLs against the true condition, and at ratio 1.0 the guided CE of logits c + w(c − u)."""
    device = next(model.parameters()).device
    n = image.shape[0]
    perm = torch.from_numpy(derangement(n, seed)) if n > 1 else torch.zeros(1, dtype=torch.long)
    out: dict[str, Any] = {}
    for direction in DIRECTIONS:
        cond_all, tgt_all = (image, audio) if direction == "image2audio" else (audio, image)
        res: dict[str, Any] = {}
        for ratio in (1.0, 0.5):
            g = torch.Generator().manual_seed(seed + 1)
            # the same target mask for every condition, so the three rows compare like with like
            tmask_all = torch.rand(tgt_all.shape, generator=g) < ratio if ratio < 1 else \
                torch.ones(tgt_all.shape, dtype=torch.bool)
            scores = {c: MaskedNLL() for c in CONDITIONS}
            guided = {w: MaskedNLL() for w in cfg_scales}
            for lo in range(0, n, batch):
                sl = slice(lo, lo + batch)
                tgt, tmask = tgt_all[sl].to(device), tmask_all[sl].to(device)
                logits_by = {}
                for c in CONDITIONS:
                    cond = (cond_all[perm[sl]] if c == "shuffled" else cond_all[sl]).to(device)
                    ck = torch.full(cond.shape, c != "masked", dtype=torch.bool, device=device)
                    logits_by[c] = _logits_for(model, direction, cond, ck, tgt, ~tmask)
                    scores[c].add(logits_by[c], tgt, tmask)
                if ratio == 1.0:
                    c_l, u_l = logits_by["true"], logits_by["masked"]
                    for w in cfg_scales:
                        guided[w].add(c_l + w * (c_l - u_l), tgt, tmask)
            key = f"ratio_{ratio:g}"
            res[key] = {c: {"nll": s.nll, "accuracy": s.accuracy} for c, s in scores.items()}
            res[key]["delta_nll_uncond"] = res[key]["masked"]["nll"] - res[key]["true"]["nll"]
            res[key]["delta_nll_shuffled"] = res[key]["shuffled"]["nll"] - res[key]["true"]["nll"]
            if ratio == 1.0:
                res[key]["guided_nll"] = {f"{w:g}": v.nll for w, v in guided.items()}
        out[direction] = res
    return out
