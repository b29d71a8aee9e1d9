"""`avtok generate`: media reading/writing helpers, and the command end to end on a tiny trained model."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from avtok.model.generate import GenerateError, colorize, parse_time_range, side_by_side
from avtok.pipeline.media_io import MediaError, load_audio, load_audio_spec01, load_image, output_paths
from PIL import Image


def test_load_image_short_side_and_centre_crop(tmp_path) -> None:
    # 640×360: left third red, middle green, right third blue -> after resize to 455×256 and a
    # centre crop of 256, the crop holds the middle (green) and a bit of red/blue at the edges
    arr = np.zeros((360, 640, 3), np.uint8)
    arr[:, :213, 0] = 255
    arr[:, 213:427, 1] = 255
    arr[:, 427:, 2] = 255
    Image.fromarray(arr).save(tmp_path / "wide.png")
    img = load_image(tmp_path / "wide.png")
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    assert tuple(img[128, 128]) == (0, 255, 0)
    assert img[128, 0, 0] > 200 and img[128, 255, 2] > 200  # edges from the outer thirds
    # a small grayscale image is upscaled, an RGBA one converted
    Image.fromarray(np.full((100, 80), 77, np.uint8)).save(tmp_path / "gray.jpg")
    g = load_image(tmp_path / "gray.jpg")
    assert g.shape == (256, 256, 3) and abs(int(g[100, 100, 0]) - 77) <= 2
    Image.fromarray(np.full((300, 300, 4), 200, np.uint8)).save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "rgba.png").shape == (256, 256, 3)


def test_load_audio_resamples_downmixes_and_pads(tmp_path) -> None:
    sr = 44100
    t = np.arange(int(4 * sr)) / sr
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    sf.write(tmp_path / "stereo.wav", np.stack([tone, tone], 1).astype(np.float32), sr)
    wave = load_audio(tmp_path / "stereo.wav")
    assert wave.shape == (220500,) and wave.dtype == np.float32
    assert np.all(wave[4 * 22050 + 100:] == 0)  # zero-padded after 4 s
    body = wave[22050:3 * 22050]
    # ffmpeg's `-ac 1` (libswresample) sums the two channels at -3 dB each: 0.5·2/√2 = 0.707
    assert np.abs(body).max() == pytest.approx(0.5 * 2 / np.sqrt(2), abs=0.01)
    spectrum = np.abs(np.fft.rfft(body))
    assert abs(np.argmax(spectrum) * 22050 / body.size - 1000) < 2
    mel = load_audio_spec01(tmp_path / "stereo.wav")
    assert mel.shape == (80, 848) and mel.dtype == np.float32
    # start offset
    sf.write(tmp_path / "long.flac", np.concatenate([np.zeros(sr), tone]).astype(np.float32), sr)
    assert np.abs(load_audio(tmp_path / "long.flac", start_s=1.0)[:2000]).max() > 0.1


def test_bad_media_files(tmp_path) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00definitely not an image" * 50)
    with pytest.raises(MediaError, match="junk.jpg: not a readable image"):
        load_image(junk)
    with pytest.raises(MediaError, match="no such image file"):
        load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 40)
    with pytest.raises(MediaError, match="bad.wav: "):
        load_audio(bad)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "pic.png")
    with pytest.raises(MediaError, match="pic.png: "):
        load_audio(tmp_path / "pic.png")


def test_time_ranges_and_output_names(tmp_path) -> None:
    assert parse_time_range("3.0-6.0") == (3.0, 6.0)
    assert parse_time_range("8-10") == (8.0, 10.0)
    for bad in ("6-3", "3", "a-b", "-1-2", "5-11"):
        with pytest.raises(GenerateError, match="bad time range"):
            parse_time_range(bad)
    img, aud = tmp_path / "foo.jpg", tmp_path / "x.wav"
    assert output_paths("image2audio", None, img, None, 1) == [{"wav": tmp_path / "foo.wav", "png": tmp_path / "foo.png"}]
    assert output_paths("audio2image", None, None, aud, 1) == [{"png": tmp_path / "x.png"}]
    assert output_paths("inpaint", None, img, aud, 1)[0]["wav"] == tmp_path / "x-inpaint.wav"
    two = output_paths("image2audio", tmp_path / "o.wav", img, None, 2)
    assert [p["wav"].name for p in two] == ["o-0.wav", "o-1.wav"]
    with pytest.raises(MediaError, match="overwrite an input"):
        output_paths("inpaint", aud, img, aud, 1)


def test_side_by_side_picture() -> None:
    image = np.full((256, 256, 3), 10, np.uint8)
    mel = np.zeros((80, 848), np.float32)
    mel[0] = 1.0  # loudest lowest band -> bottom row, bright
    pic = side_by_side(image, mel)
    assert pic.shape == (256, 256 + 8 + 848, 3) and pic.dtype == np.uint8
    assert (pic[:, :256] == 10).all()
    assert pic[-1, 300].sum() > 600 and pic[0, 300].sum() < 20
    c = colorize(np.linspace(0, 1, 848)[None].repeat(80, 0))
    assert np.all(np.diff(c[0].astype(int).sum(1)) >= -1)  # brighter as spec01 grows
