"""The synthetic demo set and its analytic oracle."""

from __future__ import annotations

import csv

import av
import numpy as np
import pytest
from avtok.model.mel import spec01
from avtok.model.vocoder import griffin_lim_vocoder
from avtok.pipeline import synthetic as syn

SR = syn.SAMPLE_RATE


def test_class_table() -> None:
    assert syn.NUM_CLASSES == 8
    assert len(set(syn.CLASS_NAMES)) == 8
    assert len({(c.pitch_hz, c.rhythm) for c in syn.CLASSES}) == 8
    assert len({c.colour for c in syn.CLASSES}) == 8
    for c in syn.CLASSES:
        assert syn.class_index(c.name) == c.index
    with pytest.raises(ValueError, match="not a synthetic class"):
        syn.class_index("dog barking")


@pytest.mark.parametrize("k", range(8))
def test_oracle_clean_audio(k: int) -> None:
    wave = syn.synth_audio(k, np.random.default_rng(k), noise=False)
    assert wave.dtype == np.float32 and wave.shape == (220500,)
    assert syn.classify_audio(wave, SR) == k
    feats = syn.audio_features(wave, SR)
    assert abs(np.log(feats["peak_hz"] / syn.CLASSES[k].pitch_hz)) < 0.03
    assert feats["onsets"] == (1 if syn.CLASSES[k].rhythm == "steady" else 9)  # beats start at columns 0, 6, ..., 48
    steady = syn.CLASSES[k].rhythm == "steady"
    assert feats["pulse"] < 0.1 if steady else feats["pulse"] == pytest.approx(2 / np.pi, abs=0.03)


def test_pulse_strength_needs_a_regular_beat() -> None:
    t = np.arange(220500) / SR
    tone = np.sin(2 * np.pi * 930 * t)
    # an exact half-on, half-off gate: the envelope's PULSE_HZ Fourier coefficient is 2/π of its mean
    gate = ((t * syn.PULSE_HZ % 1.0) < 0.5).astype(np.float64)
    assert syn.pulse_strength(tone * gate, SR, 930) == pytest.approx(2 / np.pi, abs=0.03)
    assert syn.pulse_strength(tone, SR, 930) < 0.05
    # a tone with irregular dropouts (what an undertrained model draws for a steady sound) has onsets
    # but no beat: it stays "steady"
    rng = np.random.default_rng(0)
    for _ in range(5):
        holes = np.repeat(rng.random(53) > 0.3, 4161)[:220500]
        assert syn.count_onsets(tone * holes, SR, 930) >= 4
        assert syn.pulse_strength(tone * holes, SR, 930) < syn.PULSE_THRESHOLD


def test_pulses_sit_on_the_token_columns_whatever_the_clip() -> None:
    """The beat is fixed to the audio token grid (docs/method.md, "The demo"): token columns 0-2, 6-8, ...
    are on, 3-5, 9-11, ... off, in every clip; column w's mel frames are 16·w + 6 .. 16·w + 21."""
    def rms(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))

    assert syn.PULSE_HZ == pytest.approx(22050 / (6 * 16 * 256))
    for seed in range(4):
        wave = syn.synth_audio(3, np.random.default_rng(seed))
        for col in (0, 2, 6, 24, 50, 3, 5, 9, 29, 47):
            # the middle 12 of the column's 16 hops: clear of the 10 ms edge ramps
            lo, hi = (16 * col + 6 + 2) * 256, (16 * col + 6 + 14) * 256
            seg = wave[lo:hi]
            if (col // 3) % 2 == 0:
                assert rms(seg) > 0.15, (seed, col)
            else:
                assert rms(seg) < 1e-4, (seed, col)
    # the first hops before the mel crop belong to column 0
    assert syn.pulse_gate(6 * 256).min() == 1.0
    assert syn.pulse_gate(22050, sr=22050)[(16 * 3 + 6) * 256 - 200] == 1.0
    assert syn.pulse_gate(22050, sr=22050)[(16 * 3 + 6) * 256 + 200] == 0.0


def test_oracle_noisy_audio_many_seeds() -> None:
    for seed in range(6):
        for k in range(8):
            wave = syn.synth_audio(k, np.random.default_rng(100 + seed), noise=True)
            assert syn.classify_audio(wave, SR) == k, (seed, k)


def test_oracle_other_rates_and_silence() -> None:
    wave = syn.synth_audio(5, np.random.default_rng(3), sr=16000)
    assert syn.classify_audio(wave, 16000) == 5
    assert syn.classify_audio(np.zeros(220500, np.float32), SR) == 0  # defined, no crash


def test_oracle_survives_quantised_mel_and_griffin_lim() -> None:
    """The sound oracle reads every class back through spec01 (SpecVQGAN's recipe), a quantisation to
    0.05 (coarse, the way a patch tokenizer loses detail) and `avtok generate`'s inverse (NNLS, then 32
    Griffin-Lim iterations); the demo's faster path is tests/test_demo.py's."""
    waves = np.stack([syn.synth_audio(k, np.random.default_rng(7 + k)) for k in range(8)])
    coarse = np.round(spec01(waves) * 20) / 20
    out = griffin_lim_vocoder(coarse)
    assert out.shape == (8, 848 * 256)
    assert [syn.classify_audio(w.numpy(), SR) for w in out] == list(range(8))


def _decode(path: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Every frame of a video (uint8 RGB [T, H, W, 3]), its sound (the decoded samples, flat) and its rate."""
    with av.open(path) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(path) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
        rate = c.streams.audio[0].rate
    return frames, audio, rate


def _first_frame(path: str) -> np.ndarray:
    """The first decoded frame of a video, int RGB [H, W, 3]."""
    with av.open(path) as c:
        return next(iter(c.decode(video=0))).to_ndarray(format="rgb24").astype(int)


def test_make_dataset_small(tmp_path) -> None:
    manifest = syn.make_dataset(tmp_path, clips_per_class=2, test_per_class=1, seed=1)
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(syn.MANIFEST_COLUMNS)
    assert len(rows) == 16
    assert sum(r["split"] == "test" for r in rows) == 8
    assert {r["label"] for r in rows} == set(syn.CLASS_NAMES)
    row = rows[3]  # class 1, pulsed
    frames, audio, rate = _decode(row["path"])
    assert frames[0].shape == (syn.SIZE, syn.SIZE, 3) and len(frames) == syn.FPS * 10
    assert rate == SR and audio.size >= 220000
    assert syn.classify_audio(audio, rate) == syn.class_index(row["label"])
    # the motif's colour is in the frame
    want = np.array(syn.CLASSES[1].rgb)
    assert (np.abs(frames[5].astype(int) - want).sum(-1) < 60).sum() > 500
    # a solid square (class 0) fills exactly its cells of the token grid, on a flat background
    firsts = [_first_frame(r["path"]) for r in rows]  # every clip's first frame, once
    solid = firsts[0]
    red = np.array(syn.CLASSES[0].rgb)
    lo, hi = syn.SQUARE_AT * syn.CELL, (syn.SQUARE_AT + syn.SQUARE_CELLS) * syn.CELL
    inside = np.abs(solid[lo + 2:hi - 2, lo + 2:hi - 2] - red).sum(-1)
    assert inside.max() < 60
    border = solid[: lo - 2].reshape(-1, 3)
    assert np.ptp(border, axis=0).max() <= 6 and np.ptp(border[:, 0] - border[:, 2]) <= 6  # flat grey
    # ... of one level in every clip: the picture says the class and nothing else
    levels = [f[: lo - 2].mean() for f in firsts]
    assert max(abs(v - syn.BACKGROUND_LEVEL) for v in levels) <= 3, levels
    # each class's picture is encoded once and copied into its clips: the same pixels and sound as a clip
    # encoded on its own (the class's seed-1 clip 0 made again without the shared stream)
    alone = tmp_path / "alone.mp4"
    syn.make_clip(alone, 0, syn.clip_seed(1, 0, 0))
    (alone_frames, alone_sound, _), (shared_frames, shared_sound, _) = _decode(str(alone)), _decode(rows[0]["path"])
    assert np.array_equal(alone_frames, shared_frames) and np.array_equal(alone_sound, shared_sound)
    assert not list((tmp_path / "videos").glob(".*"))  # the class streams and temporary files are gone
    # a re-run makes nothing new and writes the same manifest
    mtime = (tmp_path / "videos" / "synth-0-000.mp4").stat().st_mtime_ns
    assert syn.make_dataset(tmp_path, clips_per_class=2, test_per_class=1, seed=1).read_text() == manifest.read_text()
    assert (tmp_path / "videos" / "synth-0-000.mp4").stat().st_mtime_ns == mtime
