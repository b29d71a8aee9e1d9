"""Cnn14 and VGGish: published key layouts load strictly, shapes, and front-ends as in model/audio_nets.py's docstring."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from avtok.model import audio_nets as N

# Published key layouts, written out by hand (PANNs Cnn14 checkpoint["model"], torchvggish state dict).
CNN14_KEYS = (["spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
               "logmel_extractor.melW"]
              + [f"bn0.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
              + [f"conv_block{i}.{p}" for i in range(1, 7) for p in
                 ["conv1.weight", "conv2.weight"]
                 + [f"{bn}.{s}" for bn in ("bn1", "bn2")
                    for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]]
              + ["fc1.weight", "fc1.bias", "fc_audioset.weight", "fc_audioset.bias"])
VGGISH_KEYS = [f"features.{i}.{s}" for i in (0, 3, 6, 8, 11, 13) for s in ("weight", "bias")] + \
              [f"embeddings.{i}.{s}" for i in (0, 2, 4) for s in ("weight", "bias")]


def _random_published_cnn14(rate: int) -> dict:
    s = N.CNN14_SETTINGS[rate]
    n_freq = s["n_fft"] // 2 + 1
    shapes = {"spectrogram_extractor.stft.conv_real.weight": (n_freq, 1, s["n_fft"]),
              "spectrogram_extractor.stft.conv_imag.weight": (n_freq, 1, s["n_fft"]),
              "logmel_extractor.melW": (n_freq, 64), "fc1.weight": (2048, 2048), "fc1.bias": (2048,),
              "fc_audioset.weight": (527, 2048), "fc_audioset.bias": (527,)}
    chans = [1, 64, 128, 256, 512, 1024, 2048]
    for i in range(1, 7):
        cin, cout = chans[i - 1], chans[i]
        shapes[f"conv_block{i}.conv1.weight"] = (cout, cin, 3, 3)
        shapes[f"conv_block{i}.conv2.weight"] = (cout, cout, 3, 3)
        for bn in ("bn1", "bn2"):
            for p in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"conv_block{i}.{bn}.{p}"] = (cout,)
    for p in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"bn0.{p}"] = (64,)
    g = torch.Generator().manual_seed(rate)
    sd = {}
    for k in CNN14_KEYS:
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(1000, dtype=torch.long)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shapes[k], generator=g) + 0.5
        else:
            sd[k] = torch.randn(shapes[k], generator=g) * 0.05
    return {"model": sd, "iteration": 123}


def test_cnn14_published_layout_loads_strictly(tmp_path) -> None:
    ckpt = _random_published_cnn14(16000)
    path = tmp_path / "Cnn14_16k_mAP=0.438.pth"
    torch.save(ckpt, path)
    model = N.load_cnn14(path)
    assert sorted(model.state_dict()) == sorted(CNN14_KEYS)
    assert model.sample_rate == 16000
    torch.testing.assert_close(model.fc_audioset.weight, ckpt["model"]["fc_audioset.weight"])
    out = N.cnn14_outputs(model, [np.random.default_rng(0).normal(size=22050 * 2) * 0.1,
                                  np.zeros(1000)], sr=22050)
    assert out["2048"].shape == (2, 2048) and out["logits"].shape == (2, 527)
    assert (out["2048"] >= 0).all() and np.isfinite(out["logits"]).all()


def test_cnn14_32k_variant_and_bad_file(tmp_path) -> None:
    path = tmp_path / "Cnn14_mAP=0.431.pth"
    torch.save(_random_published_cnn14(32000), path)
    assert N.load_cnn14(path).sample_rate == 32000
    torch.save({"model": {"foo": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a PANNs Cnn14"):
        N.load_cnn14(tmp_path / "bad.pth")


@pytest.mark.parametrize("rate", [16000, 32000])
def test_cnn14_front_end_matches_librosa(rate: int) -> None:
    s = N.CNN14_SETTINGS[rate]
    model = N.Cnn14(rate)
    basis = librosa.filters.mel(sr=rate, n_fft=s["n_fft"], n_mels=64, fmin=s["fmin"], fmax=s["fmax"])
    np.testing.assert_allclose(model.logmel_extractor.melW.numpy().T, basis, rtol=1e-6)
    wave = np.random.default_rng(1).normal(size=rate).astype(np.float32) * 0.1
    ours = model.logmel(torch.from_numpy(wave)[None])[0, 0].numpy()  # [frames, 64]
    power = np.abs(librosa.stft(wave.astype(np.float64), n_fft=s["n_fft"], hop_length=s["hop"],
                                window="hann", center=True, pad_mode="reflect")) ** 2
    ref = 10 * np.log10(np.maximum(basis @ power, 1e-10)).T
    assert ours.shape == ref.shape == (1 + rate // s["hop"], 64)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_vggish_published_layout_loads_strictly(tmp_path) -> None:
    ref = N.VGGish()
    sd = {k: torch.randn_like(v) * 0.02 for k, v in ref.state_dict().items()}
    assert sorted(sd) == sorted(VGGISH_KEYS)
    assert sd["embeddings.0.weight"].shape == (4096, 12288) and sd["embeddings.4.weight"].shape == (128, 4096)
    assert sd["features.13.weight"].shape == (512, 512, 3, 3)
    path = tmp_path / "vggish-10086976.pth"
    torch.save(sd, path)
    model = N.load_vggish(path)
    wave = np.random.default_rng(2).normal(size=22050 * 3) * 0.1
    emb = N.vggish_embeddings(model, [wave, wave[:22050]], sr=22050)
    # 3 s → 298 frames → 3 patches; 1 s → 98 frames → 1 patch
    assert emb.shape == (4, 128)
    assert (emb < 0).any()  # no final ReLU
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError):
        N.load_vggish(tmp_path / "bad.pth")


def test_vggish_front_end() -> None:
    w = N.vggish_mel_matrix()
    assert w.shape == (257, 64) and (w[0] == 0).all() and w.max() <= 1.0
    freqs = np.linspace(0, 8000, 257)
    peaks = freqs[w.argmax(axis=0)]
    assert 125 < peaks[0] < 200 and 7000 < peaks[-1] < 7500
    assert np.all(np.diff(peaks) >= 0)
    # a 1 kHz tone lights the band whose HTK-mel centre is nearest 1 kHz
    t = np.arange(16000) / 16000
    ex = N.vggish_examples(np.sin(2 * np.pi * 1000 * t), 16000)
    assert ex.shape == (1, 96, 64) and ex.dtype == np.float32
    centres = 700 * (np.exp(np.linspace(N._hz_to_mel_htk(125), N._hz_to_mel_htk(7500), 66)[1:-1] / 1127) - 1)
    assert ex[0].mean(axis=0).argmax() == np.abs(centres - 1000).argmin()
    # log(mel + 0.01): silence gives log(0.01)
    np.testing.assert_allclose(N.vggish_examples(np.zeros(16000), 16000), np.log(0.01), rtol=1e-6)


def test_resample() -> None:
    t = np.arange(22050) / 22050
    y = N.resample(np.sin(2 * np.pi * 440 * t), 22050, 16000)
    assert y.shape == (16000,)
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) - 440) <= 1
