"""Closed-form checks of the distribution metrics (as audioldm_eval 0.0.3 computes them)."""

from __future__ import annotations

import numpy as np
import pytest
from avtok.model import metrics as M


def test_frechet_diagonal_gaussians_closed_form() -> None:
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    # ‖Δμ‖² + Σ (σ1 − σ2)² for diagonal covariances
    want = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert M.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want, abs=1e-9)
    assert M.frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_full_covariance_1d_and_singular() -> None:
    # 1-D: (μ1−μ2)² + (σ1−σ2)²
    assert M.frechet_distance([2.0], [[9.0]], [0.0], [[1.0]]) == pytest.approx(4 + 4)
    # singular covariances (rank 1) still give a finite number through the eps fallback
    s = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert np.isfinite(M.frechet_distance([0, 0], s, [0, 0], np.zeros((2, 2))))
    with pytest.raises(ValueError, match="shapes differ"):
        M.frechet_distance([0.0], [[1.0]], [0.0, 0.0], np.eye(2))


def test_frechet_features_uses_unbiased_cov() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4))
    b = rng.normal(size=(400, 4)) * 2 + 1
    mu_a, cov_a = M.feature_stats(a)
    np.testing.assert_allclose(cov_a, np.cov(a, rowvar=False))
    assert cov_a[0, 0] == pytest.approx(((a[:, 0] - a[:, 0].mean()) ** 2).sum() / 499)
    d = M.frechet_distance_features(a, b)
    assert d == pytest.approx(M.frechet_distance(mu_a, cov_a, *M.feature_stats(b)))
    assert 4 + 4 * 1 - 1 < d < 4 + 4 + 2  # roughly ‖1‖²·4 + 4·(2−1)²
    assert M.frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-8)


def test_inception_score_identical_predictions_is_one() -> None:
    logits = np.tile(np.array([[3.0, -1.0, 0.5, 2.0]]), (50, 1))
    mean, std = M.inception_score(logits)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_inception_score_even_one_hot_is_k(k: int) -> None:
    logits = np.full((k * 20, k), -60.0)
    logits[np.arange(k * 20), np.arange(k * 20) % k] = 0.0  # softmax = one-hot up to e^-60
    mean, _ = M.inception_score(logits, splits=1)
    assert mean == pytest.approx(k, rel=1e-9)
    # unshuffled contiguous splits each hold every class evenly
    mean10, std10 = M.inception_score(logits, splits=10, shuffle=False)
    assert mean10 == pytest.approx(k, rel=1e-9) and std10 == pytest.approx(0.0, abs=1e-9)
    # the default (shuffled with RandomState(2020)) stays at most k
    assert M.inception_score(logits)[0] <= k + 1e-9


def test_inception_score_errors() -> None:
    with pytest.raises(ValueError, match="splits"):
        M.inception_score(np.zeros((5, 3)))


def test_kl_identical_is_zero_and_positive_otherwise() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(30, 527))
    out = M.kl_divergence(ref, ref)
    # with eps = 1e-6 on the generated side the reference formula gives ≈ −C·eps, not exactly 0
    assert out["kl_softmax"] == pytest.approx(-527e-6, rel=0.05)
    assert out["kl_sigmoid"] < 0 and abs(out["kl_sigmoid"]) < 527 * 1e-6 * 4
    assert M.kl_divergence(ref, ref, eps=0.0)["kl_softmax"] == pytest.approx(0.0, abs=1e-12)
    assert M.kl_divergence(ref, ref, eps=0.0)["kl_sigmoid"] == pytest.approx(0.0, abs=1e-12)
    gen = rng.normal(size=(30, 527))
    assert M.kl_divergence(ref, gen)["kl_softmax"] > 0.1
    # exact value on a hand-made pair: KL([1,0] ‖ [0.5,0.5]) = log 2
    ref2 = np.array([[0.0, -1e4]])
    gen2 = np.array([[0.0, 0.0]])
    assert M.kl_divergence(ref2, gen2, eps=0.0)["kl_softmax"] == pytest.approx(np.log(2), rel=1e-9)


def test_paired_by_name_and_entropy() -> None:
    assert M.paired_by_name(["a", "b", "c"], ["c", "a", "b"]) == [(0, 1), (1, 2), (2, 0)]
    assert M.paired_by_name(["a", "b"], ["a", "x"]) is None
    assert M.entropy_bits(np.array([1, 1, 1, 1])) == pytest.approx(2.0)
    assert M.entropy_bits(np.array([5, 0, 0])) == 0.0
    assert M.entropy_bits(np.zeros(3)) == 0.0
