"""Vocoders: SpecVQGAN MelGAN in the published layout, and Griffin-Lim through the analytic inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from avtok.model.mel import spec01
from avtok.model.vocoder import (
    MelGANGenerator,
    VocoderError,
    griffin_lim_vocoder,
    load_melgan,
    load_vocoder,
    spec01_to_mel,
)
from torch import nn


def published_layout(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random MelGAN state dict with the key names and shapes of SpecVQGAN's best_netG.pt (docs/formats.md, "Published weights")."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(prefix: str, cout: int, cin: int, k: int, transposed: bool = False) -> None:
        v_shape = (cin, cout, k) if transposed else (cout, cin, k)
        sd[f"{prefix}.bias"] = torch.randn(cout, generator=g) * 0.1
        sd[f"{prefix}.weight_g"] = torch.rand(v_shape[0], 1, 1, generator=g) + 0.5
        sd[f"{prefix}.weight_v"] = torch.randn(*v_shape, generator=g)

    conv("model.1", 512, 80, 7)
    channels = 512
    for up, res, r in ((3, (4, 5, 6), 8), (8, (9, 10, 11), 8), (13, (14, 15, 16), 2), (18, (19, 20, 21), 2)):
        conv(f"model.{up}", channels // 2, channels, 2 * r, transposed=True)
        channels //= 2
        for n in res:
            conv(f"model.{n}.block.2", channels, channels, 3)
            conv(f"model.{n}.block.4", channels, channels, 1)
            conv(f"model.{n}.shortcut", channels, channels, 1)
    conv("model.24", 1, 32, 7)
    return sd


def reference_melgan() -> nn.Module:
    """MelGAN built from stock torch layers with torch's own weight norm (loads old weight_g/v names)."""
    wn = nn.utils.parametrizations.weight_norm

    class Res(nn.Module):
        def __init__(self, c: int, d: int) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.LeakyReLU(0.2), nn.ReflectionPad1d(d), wn(nn.Conv1d(c, c, 3, dilation=d)),
                                       nn.LeakyReLU(0.2), wn(nn.Conv1d(c, c, 1)))
            self.shortcut = wn(nn.Conv1d(c, c, 1))

        def forward(self, x):
            return self.shortcut(x) + self.block(x)

    class Gen(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers = [nn.ReflectionPad1d(3), wn(nn.Conv1d(80, 512, 7))]
            c = 512
            for r in (8, 8, 2, 2):
                layers += [nn.LeakyReLU(0.2),
                           wn(nn.ConvTranspose1d(c, c // 2, 2 * r, r, padding=r // 2 + r % 2, output_padding=r % 2))]
                c //= 2
                layers += [Res(c, 1), Res(c, 3), Res(c, 9)]
            layers += [nn.LeakyReLU(0.2), nn.ReflectionPad1d(3), wn(nn.Conv1d(32, 1, 7)), nn.Tanh()]
            self.model = nn.Sequential(*layers)

        def forward(self, x):
            return self.model(x)

    return Gen()


def test_melgan_published_layout_loads_strictly(tmp_path) -> None:
    sd = published_layout()
    assert len(sd) == 126
    assert sum(v.numel() for v in sd.values()) == 4_266_050
    ours = MelGANGenerator()
    assert set(ours.state_dict()) == set(sd)
    assert sum(p.numel() for p in ours.parameters()) == 4_266_050
    path = tmp_path / "best_netG.pt"
    torch.save(sd, path)
    gen = load_melgan(path)
    for k, v in gen.state_dict().items():
        assert torch.equal(v, sd[k]), k

    # same function as stock torch layers with torch's weight norm, on a short mel
    ref = reference_melgan()
    ref.load_state_dict(sd)
    x = torch.rand(2, 80, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(gen(x), ref(x).squeeze(1), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_melgan_848_frames_to_217088_samples(tmp_path) -> None:
    path = tmp_path / "netG.pt"
    torch.save(published_layout(), path)
    vocode = load_vocoder(path)
    mel = torch.rand(1, 80, 848, generator=torch.Generator().manual_seed(0))
    wave = vocode(mel)
    assert wave.shape == (1, 217_088) and wave.dtype == torch.float32
    assert float(wave.abs().max()) <= 1.0
    assert vocode(mel.numpy()[0]).shape == (1, 217_088)  # [80, T] numpy works too


def test_bad_vocoder_files(tmp_path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(VocoderError, match="not a readable torch state dict"):
        load_melgan(junk)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(VocoderError, match="not a MelGAN generator"):
        load_vocoder(other)
    hifi = tmp_path / "g_00100000"
    torch.save({"generator": {"conv_pre.weight_v": torch.zeros(1)}}, hifi)
    with pytest.raises(VocoderError, match="HiFi-GAN"):
        load_melgan(hifi)
    sd = published_layout()
    sd["model.1.weight_v"] = torch.zeros(512, 64, 7)  # wrong mel channel count
    bad = tmp_path / "bad.pt"
    torch.save(sd, bad)
    with pytest.raises(VocoderError, match="does not match"):
        load_melgan(bad)


def test_spec01_inverse_is_exact() -> None:
    s = torch.linspace(0, 1, 11)
    mel = spec01_to_mel(s)
    torch.testing.assert_close((20 * torch.log10(mel) + 80) / 100, s, rtol=0, atol=1e-6)
    assert float(mel[0]) == pytest.approx(1e-4) and float(mel[-1]) == pytest.approx(10.0)


@pytest.mark.slow
def test_griffin_lim_reanalysed_is_close_to_the_mel() -> None:
    sr = 22050
    t = np.arange(220500) / sr
    rng = np.random.default_rng(0)
    # a gliding tone, a steady tone and a noise burst: harmonic and noisy content, quiet and loud parts
    wave = (0.3 * np.sin(2 * np.pi * (300 + 150 * t) * t) + 0.1 * np.sin(2 * np.pi * 2000 * t)
            + 0.2 * rng.standard_normal(t.size) * np.exp(-((t - 6) ** 2) / 0.5)).astype(np.float32)
    target = spec01(wave)  # [80, 848]
    vocode = load_vocoder(None)
    out = vocode(torch.from_numpy(target)[None])
    assert out.shape == (1, 848 * 256) and out.dtype == torch.float32
    # column j of the crop is centred at (j+6)·256 of the clip; the vocoder's frame j at j·256
    again = spec01(np.concatenate([np.zeros(6 * 256, np.float32), out[0].numpy()]))
    inner = slice(4, 844)  # the clip's last frames see the zero padding of the analysis
    diff = np.abs(again[:, inner] - target[:, inner])
    # spec01 units: 0.01 = 1 dB. Griffin-Lim with 32 iterations gets within ~1.5 dB on average.
    assert diff.mean() < 0.02, diff.mean()  # measured 0.0105
    assert np.percentile(diff, 95) < 0.08  # measured 0.054
    # and it is much closer than a waveform with the right loudness but the wrong content
    wrong = spec01(0.2 * rng.standard_normal(220500).astype(np.float32))
    assert np.abs(wrong[:, inner] - target[:, inner]).mean() > 5 * diff.mean()


def test_griffin_lim_is_deterministic() -> None:
    mel = torch.rand(1, 80, 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(griffin_lim_vocoder(mel), griffin_lim_vocoder(mel))


def hifigan_layout(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random HiFi-GAN V1 generator weights with the published key names and shapes (docs/formats.md, "Published weights")."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(prefix: str, v_shape: tuple[int, int, int], cout: int) -> None:
        sd[f"{prefix}.weight_g"] = torch.rand(v_shape[0], 1, 1, generator=g) + 0.5
        sd[f"{prefix}.weight_v"] = torch.randn(*v_shape, generator=g)
        sd[f"{prefix}.bias"] = torch.randn(cout, generator=g) * 0.1

    conv("conv_pre", (512, 80, 7), 512)
    for i, k in enumerate((16, 16, 4, 4)):
        cin = 512 // 2**i
        conv(f"ups.{i}", (cin, cin // 2, k), cin // 2)  # transposed: (in, out, k)
        for j, rk in enumerate((3, 7, 11)):
            for n in range(3):
                c = cin // 2
                conv(f"resblocks.{3 * i + j}.convs1.{n}", (c, c, rk), c)
                conv(f"resblocks.{3 * i + j}.convs2.{n}", (c, c, rk), c)
    conv("conv_post", (1, 32, 7), 1)
    return sd


def test_hifigan_v1_published_layout(tmp_path) -> None:
    from avtok.model.vocoder import load_hifigan, spec01_to_hifigan_mel

    sd = hifigan_layout()
    assert len(sd) == 234 and sum(v.numel() for v in sd.values()) == 13_936_130
    path = tmp_path / "generator_v1"
    torch.save({"generator": sd}, path)
    gen = load_hifigan(path)
    assert all(torch.equal(v, sd[k]) for k, v in gen.state_dict().items())
    mel = torch.randn(1, 80, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert gen(mel).shape == (1, 2_560)  # T·256, as 100 frames -> 25,600
    vocode = load_vocoder(path)  # spec01 in, converted to HiFi-GAN's natural-log mel
    assert vocode(torch.rand(1, 80, 4)).shape == (1, 4 * 256)
    # the conversion keeps loudness: a louder spec01 gives a larger log-mel everywhere it is not floored
    quiet, loud = spec01_to_hifigan_mel(torch.full((1, 80, 4), 0.5)), spec01_to_hifigan_mel(torch.full((1, 80, 4), 0.7))
    assert float((loud - quiet)[:, 10:70].min()) > 0
    with pytest.raises(VocoderError, match="not a HiFi-GAN generator"):
        torch.save({"generator": {"x": torch.zeros(1)}}, tmp_path / "g2")
        load_hifigan(tmp_path / "g2")
