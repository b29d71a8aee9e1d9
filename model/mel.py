"""The SpecVQGAN log-mel ("spec01") of a 10 s, 22050 Hz mono waveform (docs/formats.md).

torch.stft (centre, reflect padding, periodic Hann) + librosa's Slaney mel basis, in float32 like
librosa itself on float32 audio (max abs difference to librosa ~1e-5; float64 costs 2-3x more);
parameters come from `MEL_PARAMS`.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .geometry import MEL_PARAMS

P = MEL_PARAMS


@functools.cache
def _basis64() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=P["sample_rate"], n_fft=P["n_fft"], n_mels=P["n_mels"], fmin=P["fmin"],
                               fmax=P["fmax"], htk=P["mel_htk"], norm=P["mel_norm"], dtype=np.float64)


def mel_basis() -> np.ndarray:
    """float32 [80, 513]: librosa Slaney mel filters for MEL_PARAMS (copy; safe to modify)."""
    return _basis64().astype(np.float32)


@functools.cache
def _basis32() -> torch.Tensor:
    return torch.from_numpy(_basis64().astype(np.float32))


def fit_length(wave: np.ndarray | torch.Tensor, n: int = P["n_samples"]) -> torch.Tensor:
    """Zero-pad at the end or truncate the last axis to `n` samples (float32 tensor)."""
    x = torch.as_tensor(np.asarray(wave) if not isinstance(wave, torch.Tensor) else wave).to(torch.float32)
    if x.shape[-1] >= n:
        return x[..., :n]
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))


def spec01(wave: np.ndarray | torch.Tensor) -> np.ndarray:
    """float32 [80, 848] (or [B, 80, 848] for a [B, T] batch) in [0, 1] from 22050 Hz mono audio.

    Steps: pad/truncate to 220500 → |STFT| (n_fft 1024, hop 256) → Slaney mel → 20·log10(max(·,1e-5))
    → (+80)/100 → clip [0,1] → frames 6..853 of the first 860.
    """
    x = fit_length(wave)
    single = x.dim() == 1
    if single:
        x = x[None]
    window = torch.hann_window(P["n_fft"], periodic=True, dtype=torch.float32)
    stft = torch.stft(x, n_fft=P["n_fft"], hop_length=P["hop_length"], window=window, center=True,
                      pad_mode="reflect", return_complex=True)
    mag = stft.abs()  # [B, 513, 862]
    mel = _basis32() @ mag
    db = 20.0 * torch.log10(torch.clamp(mel, min=P["amin"]))
    out = torch.clamp((db + 80.0) / 100.0, 0.0, 1.0)
    a, b = P["crop"]
    out = out[..., : P["trim_frames"]][..., a:b].to(torch.float32).numpy()
    return out[0] if single else out
