"""Closed-form distribution metrics, computed the way audioldm_eval 0.0.3 computes them (docs/method.md, "Evaluation").

* Fréchet distance of two feature sets: unbiased covariance (float64), `scipy.linalg.sqrtm(Σ1·Σ2)`,
  1e-6·I added to both covariances if the root is not finite, imaginary diagonal > 1e-3 is an error.
* Inception score on logits: softmax, shuffle with `RandomState(2020)`, 10 splits, exp(mean KL(p‖p̄)).
* KL of paired reference/generated logits: Σ KL(softmax(ref) ‖ softmax(gen) + 1e-6) / N (and sigmoid).

These are plain functions of arrays; which network produced the features is the caller's business.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

KL_EPS = 1e-6
IS_SEED = 2020


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (rows are samples) in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need a [N >= 2, D] feature array, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    out = linalg.sqrtm(a)
    return out[0] if isinstance(out, tuple) else out  # older scipy may return (root, error)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1Σ2) (the FID/FAD formula)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shapes differ: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        # singular product: regularise both covariances, as the reference code does
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrtm(Σ1Σ2)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Fréchet distance between two feature sets [N1, D], [N2, D]."""
    return frechet_distance(*feature_stats(feats1), *feature_stats(feats2))


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10, shuffle: bool = True,
                    seed: int = IS_SEED) -> tuple[float, float]:
    """(mean, std) over splits of exp(E_x KL(p(y|x) ‖ p(y))) with p = softmax(logits)."""
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if x.dim() != 2:
        raise ValueError(f"logits must be [N, C], got {tuple(x.shape)}")
    n = x.shape[0]
    if n < splits:
        raise ValueError(f"{n} samples cannot make {splits} splits")
    if shuffle:
        x = x[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    p = x.softmax(dim=1)
    log_p = x.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        p_chunk, log_p_chunk = p[lo:hi], log_p[lo:hi]
        q = p_chunk.mean(dim=0, keepdim=True)
        kl = (p_chunk * (log_p_chunk - q.log())).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


def kl_divergence(ref_logits: np.ndarray | torch.Tensor, gen_logits: np.ndarray | torch.Tensor,
                  eps: float = KL_EPS) -> dict[str, float]:
    """Paired KL: rows i of `ref_logits` and `gen_logits` belong to the same clip.

    `kl_softmax` = Σ_i KL(softmax(ref_i) ‖ softmax(gen_i) + eps) / N; `kl_sigmoid` the same with
    element-wise sigmoids (multi-label AudioSet heads).
    """
    ref = torch.as_tensor(np.asarray(ref_logits), dtype=torch.float64)
    gen = torch.as_tensor(np.asarray(gen_logits), dtype=torch.float64)
    if ref.shape != gen.shape or ref.dim() != 2:
        raise ValueError(f"need two [N, C] arrays of one shape, got {tuple(ref.shape)} and {tuple(gen.shape)}")
    n = ref.shape[0]
    soft = F.kl_div((gen.softmax(dim=1) + eps).log(), ref.softmax(dim=1), reduction="sum") / n
    sig = F.kl_div((gen.sigmoid() + eps).log(), ref.sigmoid(), reduction="sum") / n
    return {"kl_softmax": float(soft), "kl_sigmoid": float(sig)}


def paired_by_name(ref_names: list[str], gen_names: list[str], min_shared: float = 0.99) -> list[tuple[int, int]] | None:
    """Index pairs (ref, gen) of files with the same name, or None if under `min_shared` of them match.

    audioldm_eval reports KL as −1 in that case; callers do the same.
    """
    gen_at = {name: j for j, name in enumerate(gen_names)}
    pairs = [(i, gen_at[name]) for i, name in enumerate(ref_names) if name in gen_at]
    if not ref_names or len(pairs) < min_shared * max(len(ref_names), len(gen_names)):
        return None
    return pairs


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (bits) of a histogram; 0 for an empty one."""
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    total = c.sum()
    if total <= 0:
        return 0.0
    p = c[c > 0] / total
    return float(-(p * np.log2(p)).sum())
