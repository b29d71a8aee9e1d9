"""Pure-torch PANNs Cnn14 and VGGish, with their front-ends, for audioldm_eval-compatible metrics.

The networks are written from the published architectures so that the published checkpoints load
strictly (the user supplies them; nothing is downloaded):

* Cnn14 (`Cnn14_16k_mAP=0.438.pth`, `Cnn14_mAP=0.431.pth`): a dict whose key `model` holds
  `spectrogram_extractor.stft.conv_{real,imag}.weight`, `logmel_extractor.melW`, `bn0`,
  `conv_block{1..6}.{conv1,conv2,bn1,bn2}`, `fc1`, `fc_audioset`. Front-end: STFT as a conv with a
  periodic Hann window, centre/reflect padding, power spectrum, Slaney mel (librosa), 10·log10(max(·,1e-10)).
  16 kHz: n_fft 512, hop 160, 64 mels 50–8000 Hz; 32 kHz: n_fft 1024, hop 320, 64 mels 50–14000 Hz.
  Outputs: "2048" = relu(fc1(·)) embedding, "logits" = fc_audioset (527, before the sigmoid).
* VGGish (torchvggish `vggish-10086976.pth`): `features.{0,3,6,8,11,13}` convs and `embeddings.{0,2,4}`
  linears; 128-d embedding with the final ReLU removed and no PCA (as frechet_audio_distance uses it).
  Front-end (numpy, vggish_input): 16 kHz, 25 ms Hann (periodic) frames every 10 ms, |rfft 512|,
  64 HTK-mel bands 125–7500 Hz built in mel space, log(mel + 0.01), non-overlapping 96-frame patches.

Resampling: `scipy.signal.resample_poly` (polyphase, Kaiser β = 5 windowed sinc) stands in for
torchaudio's / resampy's windowed-sinc resamplers, which cannot be used here; differences are far below
the metrics' noise, but numbers are not bit-identical to audioldm_eval's.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CNN14_SETTINGS = {
    16000: {"n_fft": 512, "hop": 160, "n_mels": 64, "fmin": 50.0, "fmax": 8000.0},
    32000: {"n_fft": 1024, "hop": 320, "n_mels": 64, "fmin": 50.0, "fmax": 14000.0},
}
CNN14_MIN_SAMPLES = 32000  # audioldm_eval zero-pads shorter clips to this length
VGGISH_RATE = 16000


def resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling of a 1-D float signal (scipy polyphase)."""
    wave = np.asarray(wave, dtype=np.float64)
    if sr_in == sr_out:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(int(sr_in), int(sr_out))
    return resample_poly(wave, sr_out // g, sr_in // g)


# ----------------------------------------------------------------------------------------------- Cnn14
class _STFT(nn.Module):
    """Holds the DFT-as-conv kernels under the names torchlibrosa gives them (`conv_real`, `conv_imag`)."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        n_freq = n_fft // 2 + 1
        self.n_fft, self.hop = n_fft, hop
        self.conv_real = nn.Conv1d(1, n_freq, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, n_freq, n_fft, stride=hop, bias=False)
        n = np.arange(n_fft)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
        angle = 2 * np.pi * np.outer(np.arange(n_freq), n) / n_fft
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(np.cos(angle) * window)[:, None, :])
            self.conv_imag.weight.copy_(torch.from_numpy(-np.sin(angle) * window)[:, None, :])
        for p in self.parameters():
            p.requires_grad_(False)


class _Spectrogram(nn.Module):
    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.stft = _STFT(n_fft, hop)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, T] → power spectrogram [B, 1, frames, n_fft/2+1] (centre, reflect padding)."""
        pad = self.stft.n_fft // 2
        x = F.pad(wave[:, None, :], (pad, pad), mode="reflect")
        real = self.stft.conv_real(x).transpose(1, 2)
        imag = self.stft.conv_imag(x).transpose(1, 2)
        return (real**2 + imag**2)[:, None]


class _LogMel(nn.Module):
    def __init__(self, sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> None:
        super().__init__()
        import librosa

        basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)  # Slaney
        self.melW = nn.Parameter(torch.from_numpy(basis.T.astype(np.float32)), requires_grad=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=1e-10))  # ref 1, no top_db


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool)


class Cnn14(nn.Module):
    """PANNs Cnn14 (inference only): waveform [B, T] at `sample_rate` → {"2048": [B,2048], "logits": [B,527]}."""

    def __init__(self, sample_rate: int = 16000, classes: int = 527) -> None:
        super().__init__()
        if sample_rate not in CNN14_SETTINGS:
            raise ValueError(f"Cnn14 runs at 16000 or 32000 Hz, not {sample_rate}")
        s = CNN14_SETTINGS[sample_rate]
        self.sample_rate = sample_rate
        self.spectrogram_extractor = _Spectrogram(s["n_fft"], s["hop"])
        self.logmel_extractor = _LogMel(sample_rate, s["n_fft"], s["n_mels"], s["fmin"], s["fmax"])
        self.bn0 = nn.BatchNorm2d(s["n_mels"])
        chans = [1, 64, 128, 256, 512, 1024, 2048]
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", _ConvBlock(chans[i], chans[i + 1]))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, classes)

    def logmel(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, T] → log-mel [B, 1, frames, 64] in dB."""
        return self.logmel_extractor(self.spectrogram_extractor(wave))

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.logmel(wave)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # BN over mel bins
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, (2, 2) if i < 6 else (1, 1))
        x = x.mean(dim=3)  # over frequency
        x = x.max(dim=2).values + x.mean(dim=2)  # over time
        emb = F.relu(self.fc1(x))
        return {"2048": emb, "logits": self.fc_audioset(emb)}


def load_cnn14(path: str | os.PathLike, map_location: str = "cpu") -> Cnn14:
    """A Cnn14 from a PANNs checkpoint (dict with key `model`, or a bare state dict); the rate from melW."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    sd = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    if not isinstance(sd, dict) or "logmel_extractor.melW" not in sd:
        raise ValueError(f"{path}: not a PANNs Cnn14 checkpoint (no 'logmel_extractor.melW')")
    n_freq = sd["logmel_extractor.melW"].shape[0]
    rate = {257: 16000, 513: 32000}.get(n_freq)
    if rate is None:
        raise ValueError(f"{path}: melW has {n_freq} frequency rows; expected 257 (16 kHz) or 513 (32 kHz)")
    model = Cnn14(rate, classes=sd["fc_audioset.weight"].shape[0])
    model.load_state_dict(sd, strict=True)
    return model.eval()


@torch.no_grad()
def cnn14_outputs(model: Cnn14, waves: list[np.ndarray], sr: int) -> dict[str, np.ndarray]:
    """audioldm_eval's loading for each clip (mono, DC removed, resampled, padded to ≥ 32000), batch 1."""
    embs, logits = [], []
    for wave in waves:
        w = np.asarray(wave, dtype=np.float64)
        w = w[0] if w.ndim > 1 else w  # first channel only
        w = resample(w - w.mean(), sr, model.sample_rate)
        if w.size < CNN14_MIN_SAMPLES:
            w = np.pad(w, (0, CNN14_MIN_SAMPLES - w.size))
        out = model(torch.from_numpy(w.astype(np.float32))[None])
        embs.append(out["2048"][0].numpy())
        logits.append(out["logits"][0].numpy())
    return {"2048": np.stack(embs), "logits": np.stack(logits)}


# ---------------------------------------------------------------------------------------------- VGGish
def _hz_to_mel_htk(f: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def vggish_mel_matrix(n_mels: int = 64, n_bins: int = 257, sr: int = VGGISH_RATE,
                      fmin: float = 125.0, fmax: float = 7500.0) -> np.ndarray:
    """[n_bins, n_mels] triangles built in HTK-mel space, DC row zeroed (vggish mel_features)."""
    bins_mel = _hz_to_mel_htk(np.linspace(0.0, sr / 2, n_bins))
    edges = np.linspace(_hz_to_mel_htk(fmin), _hz_to_mel_htk(fmax), n_mels + 2)
    weights = np.empty((n_bins, n_mels))
    for i in range(n_mels):
        lo, centre, hi = edges[i:i + 3]
        lower = (bins_mel - lo) / (centre - lo)
        upper = (hi - bins_mel) / (hi - centre)
        weights[:, i] = np.maximum(0.0, np.minimum(lower, upper))
    weights[0, :] = 0.0
    return weights


def vggish_examples(wave: np.ndarray, sr: int) -> np.ndarray:
    """Waveform → log-mel patches [N, 96, 64] float32 (vggish_input.waveform_to_examples)."""
    w = np.asarray(wave, dtype=np.float64)
    if w.ndim > 1:
        w = w.mean(axis=0)  # channels first
    w = resample(w, sr, VGGISH_RATE)
    win, hop, n_fft = 400, 160, 512
    if w.size < win:
        return np.zeros((0, 96, 64), np.float32)
    n_frames = 1 + (w.size - win) // hop
    frames = w[np.arange(win)[None, :] + hop * np.arange(n_frames)[:, None]]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    mag = np.abs(np.fft.rfft(frames * window, n_fft))
    logmel = np.log(mag @ vggish_mel_matrix() + 0.01)
    n_ex = logmel.shape[0] // 96  # a trailing partial patch is dropped
    return logmel[: n_ex * 96].reshape(n_ex, 96, 64).astype(np.float32)


class VGGish(nn.Module):
    """torchvggish VGGish: log-mel patches [N, 1, 96, 64] → embeddings [N, 128] (no final ReLU, no PCA)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for spec in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if spec == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(spec), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(spec)
        self.features = nn.Sequential(*layers)
        # the published net ends with a ReLU after the last linear; FAD uses it without (use_activation=False)
        self.embeddings = nn.Sequential(nn.Linear(512 * 4 * 6, 4096), nn.ReLU(inplace=True),
                                        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # [N, 512, 6, 4]
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # TF's NHWC flatten order
        return self.embeddings(x)


def load_vggish(path: str | os.PathLike, map_location: str = "cpu") -> VGGish:
    """A VGGish from torchvggish's state dict (`pproc.*` PCA entries, if present, are ignored)."""
    sd = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(sd, dict) or "features.0.weight" not in sd:
        raise ValueError(f"{path}: not a torchvggish state dict (no 'features.0.weight')")
    sd = {k: v for k, v in sd.items() if not k.startswith("pproc.")}
    model = VGGish()
    model.load_state_dict(sd, strict=True)
    return model.eval()


@torch.no_grad()
def vggish_embeddings(model: VGGish, waves: list[np.ndarray], sr: int) -> np.ndarray:
    """All frame embeddings of all clips, pooled [M, 128] (FAD's convention)."""
    out = []
    for wave in waves:
        ex = vggish_examples(wave, sr)
        if len(ex):
            out.append(model(torch.from_numpy(ex)[:, None]).numpy())
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)

