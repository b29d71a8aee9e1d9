"""spec01 against a librosa reference computed here, per docs/formats.md, "The mel recipe"."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from avtok.model.geometry import MEL_SHAPE
from avtok.model.mel import mel_basis, spec01

SR = 22050


def reference(wave: np.ndarray) -> np.ndarray:
    """librosa: |stft| (1024/256, hann, centre) → Slaney mel 80 125–7600 → spec01 → frames 6..853 of 860."""
    x = np.zeros(220500, np.float32)
    x[: min(len(wave), 220500)] = wave[:220500]
    mag = np.abs(librosa.stft(x, n_fft=1024, hop_length=256))
    mel = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=80, fmin=125, fmax=7600) @ mag
    s = np.clip((20 * np.log10(np.maximum(mel, 1e-5)) + 80) / 100, 0, 1)
    return s[:, :860][:, 6:854]


def _noise() -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(220500) * 0.2).astype(np.float32)


def _chirp() -> np.ndarray:
    t = np.arange(220500) / SR
    return (0.5 * np.sin(2 * np.pi * (100 * t + (8000 - 100) / (2 * 10) * t**2))).astype(np.float32)


@pytest.mark.parametrize("make", [_noise, _chirp], ids=["noise", "chirp"])
def test_matches_librosa(make):
    wave = make()
    out = spec01(wave)
    assert out.shape == MEL_SHAPE == (80, 848) and out.dtype == np.float32
    assert np.abs(out - reference(wave)).max() <= 1e-4
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.max() > 0.5  # real signal, not clipped away


def test_silence_is_all_zeros():
    out = spec01(np.zeros(220500, np.float32))
    assert np.array_equal(out, np.zeros((80, 848), np.float32))
    assert np.array_equal(reference(np.zeros(220500, np.float32)), out)


def test_pads_and_truncates():
    wave = _noise()
    short = wave[:100_000]
    assert np.abs(spec01(short) - reference(short)).max() <= 1e-4
    longer = np.concatenate([wave, wave[:5000]])
    assert np.array_equal(spec01(longer), spec01(wave))


def test_batch_and_tensor_input():
    batch = np.stack([_noise(), _chirp(), np.zeros(220500, np.float32)])
    out = spec01(torch.from_numpy(batch))
    assert out.shape == (3, 80, 848)
    for i in range(3):
        assert np.abs(out[i] - spec01(batch[i])).max() <= 1e-6


def test_mel_basis():
    b = mel_basis()
    assert b.shape == (80, 513) and b.dtype == np.float32
    ref = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=80, fmin=125, fmax=7600)
    assert np.abs(b - ref).max() <= 1e-7
