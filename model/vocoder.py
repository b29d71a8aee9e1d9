"""spec01 mel -> waveform: SpecVQGAN's MelGAN generator, or Griffin-Lim through the analytic inverse.

MelGAN (docs/formats.md, "Published weights"): Generator(80, ngf=32, n_residual_layers=3), upsampling ratios
8·8·2·2 = 256, old-style weight norm (`weight_g`/`weight_v` keys, 126 of them), fed spec01 in
[0, 1] directly; T mel frames -> T·256 samples at 22050 Hz. The published `best_netG.pt` is a plain
state dict and loads strictly.

HiFi-GAN V1 (same section) loads too (234 keys); spec01 is converted to its natural-log mel first.

Griffin-Lim (docs/formats.md, "The mel recipe"): spec01 -> dB -> mel magnitude -> non-negative least-squares inverse of the
Slaney mel basis -> STFT magnitude -> 32 fast Griffin-Lim iterations with torch.stft/istft.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .geometry import HOP, N_FFT, N_MELS, SAMPLE_RATE
from .mel import mel_basis

MELGAN_RATIOS = (8, 8, 2, 2)

Vocoder = Callable[[torch.Tensor | np.ndarray], torch.Tensor]


class VocoderError(ValueError):
    """A vocoder file that is not a SpecVQGAN MelGAN generator state dict."""


def _wn_weight(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # weight_norm(dim=0): every output slice (dim 0) of v scaled to norm g
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return v * (g / norm)


class WNConv1d(nn.Module):
    """Conv1d with the pre-parametrization weight norm layout (weight_g, weight_v, bias)."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(cout, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(cout, cin, kernel) * (1.0 / (cin * kernel) ** 0.5))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.dilation, self.padding = dilation, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _wn_weight(self.weight_g, self.weight_v)
        return F.conv1d(x, w, self.bias, dilation=self.dilation, padding=self.padding)


class WNConvTranspose1d(nn.Module):
    """ConvTranspose1d with old weight norm; weight is (in, out, k), so g is (in, 1, 1)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(cin, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(cin, cout, kernel) * (1.0 / (cin * kernel) ** 0.5))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.stride, self.padding, self.output_padding = stride, padding, output_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _wn_weight(self.weight_g, self.weight_v)
        return F.conv_transpose1d(x, w, self.bias, stride=self.stride, padding=self.padding,
                                  output_padding=self.output_padding)


class MelGANResBlock(nn.Module):
    """shortcut(x) + [LReLU, ReflPad(d), conv k3 dil d, LReLU, conv k1](x)."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.ReflectionPad1d(dilation),
            WNConv1d(channels, channels, 3, dilation=dilation),
            nn.LeakyReLU(0.2),
            WNConv1d(channels, channels, 1),
        )
        self.shortcut = WNConv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class MelGANGenerator(nn.Module):
    """SpecVQGAN's MelGAN generator; module indices match the published state dict (`model.N.*`)."""

    def __init__(self, n_mels: int = N_MELS, ngf: int = 32, n_residual_layers: int = 3) -> None:
        super().__init__()
        mult = 2 ** len(MELGAN_RATIOS)
        layers: list[nn.Module] = [nn.ReflectionPad1d(3), WNConv1d(n_mels, mult * ngf, 7)]
        for r in MELGAN_RATIOS:
            layers += [
                nn.LeakyReLU(0.2),
                WNConvTranspose1d(mult * ngf, mult * ngf // 2, 2 * r, stride=r, padding=r // 2 + r % 2,
                                  output_padding=r % 2),
            ]
            layers += [MelGANResBlock(mult * ngf // 2, 3**j) for j in range(n_residual_layers)]
            mult //= 2
        layers += [nn.LeakyReLU(0.2), nn.ReflectionPad1d(3), WNConv1d(ngf, 1, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, spec01: torch.Tensor) -> torch.Tensor:
        """spec01 [B, 80, T] -> waveform [B, T·256] in [-1, 1]."""
        return self.model(spec01).squeeze(1)


class HiFiResBlock1(nn.Module):
    """HiFi-GAN ResBlock1: three (dilated conv, conv) pairs, each a residual, LeakyReLU 0.1 before each conv."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...] = (1, 3, 5)) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(WNConv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2)
                                    for d in dilations)
        self.convs2 = nn.ModuleList(WNConv1d(channels, channels, kernel, padding=(kernel - 1) // 2)
                                    for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1))
        return x


class HiFiGANGenerator(nn.Module):
    """HiFi-GAN V1 (docs/formats.md, "Published weights"): 234 keys, 13,936,130 parameters; input natural-log mel."""

    RATES, KERNELS, RES_KERNELS = (8, 8, 2, 2), (16, 16, 4, 4), (3, 7, 11)

    def __init__(self, n_mels: int = N_MELS, channels: int = 512) -> None:
        super().__init__()
        self.conv_pre = WNConv1d(n_mels, channels, 7, padding=3)
        self.ups = nn.ModuleList(
            WNConvTranspose1d(channels // 2**i, channels // 2 ** (i + 1), k, stride=u, padding=(k - u) // 2,
                              output_padding=0)
            for i, (u, k) in enumerate(zip(self.RATES, self.KERNELS, strict=True)))
        self.resblocks = nn.ModuleList(HiFiResBlock1(channels // 2 ** (i + 1), k)
                                       for i in range(len(self.RATES)) for k in self.RES_KERNELS)
        self.conv_post = WNConv1d(channels // 2 ** len(self.RATES), 1, 7, padding=3)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log mel [B, 80, T] -> waveform [B, T·256]."""
        x = self.conv_pre(log_mel)
        n = len(self.RES_KERNELS)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            x = sum(self.resblocks[i * n + j](x) for j in range(n)) / n
        return torch.tanh(self.conv_post(F.leaky_relu(x))).squeeze(1)  # torch's default slope 0.01 here


def _read_state(path: str | os.PathLike) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise VocoderError(f"{path}: not a readable torch state dict ({type(e).__name__})") from e
    if not isinstance(state, dict):
        raise VocoderError(f"{path}: not a vocoder state dict")
    return state


def _load_strict(gen: nn.Module, state: dict, path: str | os.PathLike, name: str) -> nn.Module:
    try:
        gen.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise VocoderError(f"{path}: {name} state dict does not match the published layout: "
                           f"{str(e).strip().splitlines()[0]}") from e
    return gen.eval()


def load_melgan(path: str | os.PathLike, device: str | torch.device = "cpu") -> MelGANGenerator:
    """Load a MelGAN generator state dict (plain, as `best_netG.pt`) strictly, weights only."""
    state = _read_state(path)
    if "generator" in state and "model.1.weight_v" not in state:
        raise VocoderError(f"{path}: looks like a HiFi-GAN checkpoint, not SpecVQGAN's MelGAN")
    if "model.1.weight_v" not in state:
        raise VocoderError(f"{path}: not a MelGAN generator state dict (no 'model.1.weight_v')")
    return _load_strict(MelGANGenerator(), state, path, "MelGAN").to(device)


def load_hifigan(path: str | os.PathLike, device: str | torch.device = "cpu") -> HiFiGANGenerator:
    """Load a HiFi-GAN V1 generator (`{"generator": state_dict}` as `generator_v1`, or a bare state dict)."""
    state = _read_state(path)
    state = state.get("generator", state)
    if not isinstance(state, dict) or "conv_pre.weight_v" not in state:
        raise VocoderError(f"{path}: not a HiFi-GAN generator (no 'conv_pre.weight_v')")
    return _load_strict(HiFiGANGenerator(), state, path, "HiFi-GAN V1").to(device)


def spec01_to_mel(spec01: torch.Tensor) -> torch.Tensor:
    """Invert the spec01 normalisation: clip((20·log10(mel)+80)/100) -> mel magnitude (docs/formats.md)."""
    return torch.pow(10.0, (spec01 * 100.0 - 80.0) / 20.0)


@functools.cache
def _nnls_parts() -> tuple[torch.Tensor, torch.Tensor, float]:
    """(basis, its pseudo-inverse, 1/Lipschitz step) on the CPU, computed once."""
    basis = torch.from_numpy(mel_basis())
    step = 1.0 / float(torch.linalg.matrix_norm(basis.T @ basis, ord=2))
    return basis, torch.linalg.pinv(basis), step


def mel_to_stft_magnitude(mel: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """Non-negative least squares |S| >= 0 for basis·|S| ≈ mel (librosa's mel_to_stft, done in torch).

    Projected gradient descent from the clamped pseudo-inverse: after 100 steps the relative mel
    residual is about 5× smaller than librosa's answer, in a fraction of its time.
    [B, 80, T] -> [B, 513, T].
    """
    basis, pinv, step = _nnls_parts()
    basis, pinv = basis.to(mel.device), pinv.to(mel.device)
    m = mel.to(torch.float32)
    x = (pinv @ m).clamp_(min=0)
    for _ in range(iters):
        # basis.T @ (basis @ x - m) is three times cheaper than forming the 513×513 Gram matrix
        x = (x - step * (basis.T @ (basis @ x - m))).clamp_(min=0)
    return x


def griffin_lim(magnitude: torch.Tensor, n_iter: int = 32, momentum: float = 0.99,
                length: int | None = None, seed: int = 0) -> torch.Tensor:
    """Fast Griffin-Lim (momentum 0.99, as librosa) from |STFT| [B, 513, T] -> waveform [B, length]."""
    window = torch.hann_window(N_FFT, periodic=True, device=magnitude.device)
    gen = torch.Generator(device=magnitude.device).manual_seed(seed)
    phase = torch.rand(magnitude.shape, generator=gen, device=magnitude.device) * (2 * torch.pi)
    angles = torch.polar(torch.ones_like(magnitude), phase)
    prev: torch.Tensor | None = None  # no momentum term on the first pass (the demo runs only that one)

    def istft(spec: torch.Tensor) -> torch.Tensor:
        return torch.istft(spec, N_FFT, HOP, N_FFT, window, center=True, length=length)

    for _ in range(n_iter):
        wave = istft(magnitude * angles)
        rebuilt = torch.stft(wave, N_FFT, HOP, N_FFT, window, center=True, pad_mode="constant",
                             return_complex=True)
        rebuilt = rebuilt[..., : magnitude.shape[-1]]
        angles = rebuilt if prev is None else rebuilt - (momentum / (1 + momentum)) * prev
        prev = rebuilt
        angles = angles / (angles.abs() + 1e-16)
    return istft(magnitude * angles)


def griffin_lim_vocoder(spec01: torch.Tensor | np.ndarray, n_iter: int = 32, nnls_iters: int = 100) -> torch.Tensor:
    """spec01 [B, 80, T] (or [80, T]) -> waveform [B, T·256] by the analytic inverse + Griffin-Lim.

    `nnls_iters=0` keeps the clamped pseudo-inverse of the mel basis (one matmul instead of seconds per
    clip on a CPU): enough for pure tones, as in `avtok demo`."""
    x = torch.as_tensor(spec01, dtype=torch.float32)
    if x.dim() == 2:
        x = x.unsqueeze(0)
    mag = mel_to_stft_magnitude(spec01_to_mel(x), iters=nnls_iters)
    wave = griffin_lim(mag, n_iter=n_iter, length=x.shape[-1] * HOP)
    return wave.clamp(-1.0, 1.0)


def spec01_to_hifigan_mel(spec01: torch.Tensor) -> torch.Tensor:
    """Re-express spec01 (Slaney 125-7600 Hz, dB/100) in HiFi-GAN's mel: Slaney 0-8000 Hz, ln(max(·, 1e-5)).

    Through the linear magnitude: spec01 -> mel -> NNLS |STFT| -> HiFi-GAN basis -> natural log.
    """
    import librosa

    mag = mel_to_stft_magnitude(spec01_to_mel(spec01))
    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=8000.0)
    mel = torch.from_numpy(basis).to(mag.device) @ mag
    return torch.log(mel.clamp(min=1e-5))


def load_vocoder(path: str | os.PathLike | None, device: str | torch.device = "cpu") -> Vocoder:
    """A callable spec01 [B, 80, T] -> float32 waveform [B, T·256] at 22050 Hz (on CPU).

    path None -> Griffin-Lim through the analytic inverse; a SpecVQGAN MelGAN state dict (fed spec01
    directly); or a HiFi-GAN V1 generator (spec01 converted to its log-mel first; the published
    HiFi-GANs were trained on speech/other mels, so expect lower quality than a MelGAN on spec01).
    """
    if path is None:
        return lambda spec01: griffin_lim_vocoder(torch.as_tensor(spec01).float().to(device)).cpu()
    state_keys = _read_state(path)
    if "generator" in state_keys or "conv_pre.weight_v" in state_keys:
        gen: nn.Module = load_hifigan(path, device)
        prepare: Callable[[torch.Tensor], torch.Tensor] = spec01_to_hifigan_mel
    else:
        gen, prepare = load_melgan(path, device), (lambda x: x)

    @torch.no_grad()
    def vocode(spec01: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(spec01, dtype=torch.float32)
        if x.dim() == 2:
            x = x.unsqueeze(0)
        return gen(prepare(x.to(device))).float().cpu()

    return vocode
