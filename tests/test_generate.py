"""`avtok generate`: media reading/writing helpers, and the command end to end on a tiny trained model."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from avtok.model.generate import GenerateError, colorize, parse_time_range, side_by_side
from avtok.pipeline.generate import output_paths
from avtok.pipeline.media import MediaError, load_audio, load_audio_spec01, load_image
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


# ------------------------------------------------------------------------------------------ end to end
CODEBOOK = 32


def _clip_image(k: int, rng: np.random.Generator) -> np.ndarray:
    """Class k's colour square on a noisy grey background, 256×256."""
    from avtok.pipeline.synthetic import CLASSES

    img = rng.integers(90, 130, (256, 256, 3)).astype(np.uint8)
    colour = np.array(CLASSES[k].rgb, np.uint8)
    y, x = rng.integers(20, 120, 2)
    img[y:y + 110, x:x + 110] = colour
    return img


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained briefly on patch-kmeans tokens of generated image/sound pairs."""
    import torch
    from avtok.model.geometry import MEL_PARAMS
    from avtok.model.mel import spec01
    from avtok.model.token_shards import make_meta, write_token_index, write_token_shard
    from avtok.model.tokenizers import frames_to_input, load_tokenizer, mel_to_input
    from avtok.model.tokenizers.patch_kmeans import fit_patch_kmeans
    from avtok.model.train import TrainConfig, train
    from avtok.pipeline.synthetic import synth_audio

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("e2e")
    rng = np.random.default_rng(0)
    classes = np.arange(24) % 8
    frames = np.stack([_clip_image(int(k), rng) for k in classes])
    waves = np.stack([synth_audio(int(k), rng) for k in classes])
    mels = spec01(waves)
    kmeans = fit_patch_kmeans(frames, mels, root / "kmeans.safetensors", k=CODEBOOK, iters=4)
    # the same kind of file, fitted on other data: its fingerprints differ
    other = fit_patch_kmeans(frames[::-1].copy(), mels[::-1].copy(), root / "other.safetensors", k=CODEBOOK,
                             iters=4, seed=5)
    tok_i = load_tokenizer(kmeans, "patch-kmeans", modality="image")
    tok_a = load_tokenizer(kmeans, "patch-kmeans", modality="audio")
    img_tokens = tok_i.encode(frames_to_input(frames)).numpy().astype(np.uint16)
    aud_tokens = tok_a.encode(mel_to_input(mels)).numpy().astype(np.uint16)
    meta = make_meta(image_tokenizer=tok_i.record(), audio_tokenizer=tok_a.record(), mel=MEL_PARAMS,
                     image_codebook=CODEBOOK, audio_codebook=CODEBOOK)
    tokens = root / "tokens"
    tokens.mkdir()
    entry = write_token_shard(tokens / "tokens-000000.parquet", meta, [f"c{i}" for i in range(24)],
                              [str(k) for k in classes], ["train"] * 24, np.repeat(img_tokens[:, None], 10, 1),
                              aud_tokens)
    write_token_index(tokens, meta, [entry])
    summary = train(TrainConfig(shards=str(tokens), out=str(root / "run"), preset="tiny", batch_size=16, steps=12,
                                device="cpu", eval_every=10**6, ckpt_every=12, log_every=100), log=lambda _m: None)
    media = root / "media"
    media.mkdir()
    from PIL import Image

    Image.fromarray(_clip_image(3, rng)).resize((320, 240)).save(media / "foo.jpg")
    sf.write(media / "x.wav", synth_audio(2, rng), 22050)
    return {"root": root, "ckpt": summary.checkpoint, "kmeans": kmeans, "other": other, "media": media}


def _cli(args: list[str]):
    from avtok.cli.main import cli
    from click.testing import CliRunner

    return CliRunner().invoke(cli, ["generate", *map(str, args)])


@pytest.mark.slow
def test_generate_image_to_audio_and_audio_to_image(trained, tmp_path) -> None:
    media, ckpt = trained["media"], trained["ckpt"]
    res = _cli(["--image", media / "foo.jpg", "--checkpoint", ckpt, "--steps", 4, "--out", tmp_path / "foo.wav"])
    assert res.exit_code == 0, res.output
    assert "image2audio" in res.output and "foo.wav" in res.output
    info = sf.info(tmp_path / "foo.wav")
    assert info.samplerate == 22050 and info.channels == 1 and info.frames == 848 * 256  # 9.85 s
    wave, _ = sf.read(tmp_path / "foo.wav")
    assert np.abs(wave).max() > 1e-3  # not silence
    with Image.open(tmp_path / "foo.png") as im:
        assert im.size == (256 + 8 + 848, 256) and im.mode == "RGB"

    res = _cli(["--audio", media / "x.wav", "--checkpoint", ckpt, "--steps", 4, "--out", tmp_path / "img.png"])
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "img.png") as im:
        assert im.size == (256, 256) and im.mode == "RGB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foo.png", "foo.wav", "img.png"]


@pytest.mark.slow
def test_generate_inpaint_joint_and_moved_tokenizer(trained, tmp_path) -> None:
    import shutil

    media, ckpt = trained["media"], trained["ckpt"]
    res = _cli(["--inpaint", "3.0-6.0", "--audio", media / "x.wav", "--image", media / "foo.jpg", "--checkpoint",
                ckpt, "--steps", 3, "--seed", 1, "--precision", "bf16", "--out", tmp_path / "in.wav"])
    assert res.exit_code == 0, res.output
    assert sf.info(tmp_path / "in.wav").frames == 848 * 256
    res = _cli(["--joint", "--num-samples", 2, "--checkpoint", ckpt, "--steps", 2, "--out", tmp_path / "j.wav"])
    assert res.exit_code == 0, res.output
    assert {"j-0.wav", "j-0.png", "j-1.wav", "j-1.png"} <= {p.name for p in tmp_path.iterdir()}
    # the picture first, then the sound given it, each in --steps steps, every draw kept to the top-p nucleus
    res = _cli(["--joint", "--joint-order", "image-first", "--top-p", 0.7, "--token-temperature", 0.1,
                "--checkpoint", ckpt, "--steps", 2, "--out", tmp_path / "jf.wav"])
    assert res.exit_code == 0, res.output
    assert sf.info(tmp_path / "jf.wav").frames == 848 * 256 and (tmp_path / "jf.png").is_file()
    for bad, name in ((["--top-p", 0], "--top-p"), (["--top-p", 1.5], "--top-p"), (["--joint-order", "x"], "--joint-order"),
                      (["--token-temperature", 0], "--token-temperature"),
                      (["--token-temperature", "nan"], "--token-temperature")):
        res = _cli(["--joint", *bad, "--checkpoint", ckpt, "--steps", 2, "--out", tmp_path / "bad.wav"])
        assert res.exit_code == 2 and name in res.output and not (tmp_path / "bad.wav").exists()
    # the tokenizer file moved: refused until named, then used
    moved = tmp_path / "moved.safetensors"
    shutil.move(trained["kmeans"], moved)
    try:
        res = _cli(["--audio", media / "x.wav", "--checkpoint", ckpt, "--steps", 2, "--out", tmp_path / "m.png"])
        assert res.exit_code != 0 and "not found; pass --image-tokenizer" in res.output
        assert not (tmp_path / "m.png").exists()
        res = _cli(["--audio", media / "x.wav", "--checkpoint", ckpt, "--steps", 2, "--out", tmp_path / "m.png",
                    "--image-tokenizer", moved, "--audio-tokenizer", moved])
        assert res.exit_code == 0, res.output
        assert (tmp_path / "m.png").is_file()
    finally:
        shutil.move(moved, trained["kmeans"])


@pytest.mark.slow
def test_generate_bad_inputs_one_line_nothing_written(trained, tmp_path) -> None:
    media, ckpt = trained["media"], trained["ckpt"]
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00\x01 not an image" * 100)
    bad_wav = tmp_path / "bad.wav"
    bad_wav.write_bytes(b"RIFF....WAVEfmt garbage" * 30)
    not_ckpt = tmp_path / "model.pt"
    not_ckpt.write_bytes(b"PK\x03\x04 this is no checkpoint")
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        (["--image", junk, "--checkpoint", ckpt], "not a readable image"),
        (["--audio", bad_wav, "--checkpoint", ckpt], "bad.wav: "),
        (["--image", media / "foo.jpg", "--checkpoint", not_ckpt], "not an avtok checkpoint"),
        (["--image", media / "foo.jpg", "--checkpoint", ckpt, "--image-tokenizer", trained["other"]],
         "fingerprint"),
        (["--image", media / "foo.jpg", "--checkpoint", ckpt, "--audio-tokenizer", trained["other"]],
         "does not match the checkpoint"),
        (["--image", media / "foo.jpg", "--checkpoint", ckpt, "--vocoder", junk], "not a readable torch state dict"),
        (["--inpaint", "6-3", "--audio", media / "x.wav", "--image", media / "foo.jpg", "--checkpoint", ckpt],
         "bad time range"),
    ]
    for args, expected in cases:
        res = _cli([*args, "--out", out / "o.wav", "--steps", 2])
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 1, (args, res.output)
        assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], (args, res.output)
        assert list(out.iterdir()) == [], args

    # the real command line too: one line on stderr, nothing on stdout, exit status 1
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "avtok.cli.main", "generate", "--image", str(junk), "--checkpoint",
                           str(ckpt), "--out", str(out / "o.wav")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "not a readable image" in proc.stderr
    assert list(out.iterdir()) == []


def test_existing_outputs_refused_unless_overwrite(tmp_path) -> None:
    from avtok.model.files import OutputError
    from avtok.pipeline.generate import write_outputs

    img = tmp_path / "dog.jpg"
    (tmp_path / "dog.wav").write_bytes(b"my recording")
    with pytest.raises(MediaError, match="dog.wav: exists already; pass --overwrite"):
        output_paths("image2audio", None, img, None, 1, overwrite=False)
    assert output_paths("image2audio", None, img, None, 1, overwrite=True)[0]["wav"] == tmp_path / "dog.wav"
    # the last line of defence: a name taken while sampling is not replaced either
    with pytest.raises(OutputError, match="dog.wav: exists already"):
        write_outputs({tmp_path / "dog.wav": b"generated"})
    assert (tmp_path / "dog.wav").read_bytes() == b"my recording"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dog.wav"]  # no temporary file left
    write_outputs({tmp_path / "dog.wav": b"generated"}, overwrite=True)
    assert (tmp_path / "dog.wav").read_bytes() == b"generated"
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match=r"file: cannot make this folder"):
        write_outputs({tmp_path / "file" / "x.wav": b"generated"})


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_get_the_users_permissions(tmp_path, umask) -> None:
    import os
    import stat

    from avtok.pipeline.generate import write_outputs

    old = os.umask(umask)
    try:
        [path] = write_outputs({tmp_path / "sub" / "x.png": b"png"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.slow
def test_generate_never_replaces_an_existing_file(trained, tmp_path) -> None:
    import os
    import shutil
    import stat

    ckpt = trained["ckpt"]
    img = tmp_path / "dog.jpg"
    shutil.copy(trained["media"] / "foo.jpg", img)
    (tmp_path / "dog.wav").write_bytes(b"the user's own recording")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    res = _cli(["--image", img, "--checkpoint", ckpt, "--steps", 2])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and "dog.wav: exists already" in lines[0], res.output
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before
    old = os.umask(0o022)
    try:
        res = _cli(["--image", img, "--checkpoint", ckpt, "--steps", 2, "--overwrite"])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    assert sf.info(tmp_path / "dog.wav").frames == 848 * 256
    for name in ("dog.wav", "dog.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


# ------------------------------------------------------------------------ every PIL mode, huge images
def _uniform(tmp_path, mode: str, value, fmt: str, **save) -> object:
    path = tmp_path / f"{mode.replace(';', '_')}.{fmt}"
    Image.new(mode, (300, 200), value).save(path, **save)
    return path


def _palette(value_index: int, transparent: int | None):
    im = Image.new("P", (300, 200), value_index)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # 0 = red, 1 = blue
    if transparent is not None:
        im.info["transparency"] = transparent
    return im


@pytest.mark.parametrize("mode, value, fmt, expected", [
    ("1", 1, "png", (255, 255, 255)),
    ("1", 0, "png", (0, 0, 0)),
    ("L", 77, "png", (77, 77, 77)),
    ("LA", (200, 128), "png", (227, 227, 227)),  # (200·128 + 255·127 + 127) // 255: grey 200 half over white
    ("RGBA", (255, 0, 0, 128), "png", (255, 127, 127)),  # half-transparent red on white
    ("RGBA", (0, 0, 0, 0), "png", (255, 255, 255)),  # transparent black shows the white page, not black
    ("RGB", (10, 20, 30), "png", (10, 20, 30)),
    ("CMYK", (255, 0, 0, 0), "tiff", (0, 255, 255)),  # full cyan
    ("CMYK", (0, 0, 0, 128), "tiff", (127, 127, 127)),  # half black
    ("CMYK", (0, 255, 255, 0), "tiff", (255, 0, 0)),  # magenta + yellow = red
    ("I;16", 32896, "png", (128, 128, 128)),  # 16-bit: 32896 · 255 / 65535 = 128, not clipped to 255
    ("I;16", 1000, "png", (4, 4, 4)),
    ("I;16", 65535, "tiff", (255, 255, 255)),
    ("I", 65535, "tiff", (255, 255, 255)),
    ("I", 70000, "tiff", (255, 255, 255)),  # beyond 16 bits: clipped
    ("I", 13107, "tiff", (51, 51, 51)),
    ("F", 0.5, "tiff", (128, 128, 128)),  # float in 0..1
    ("F", 0.2, "tiff", (51, 51, 51)),
    ("F", 200.0, "tiff", (200, 200, 200)),  # float beyond 1: taken as 0..255
])
def test_every_mode_becomes_the_rgb_a_person_sees(tmp_path, mode, value, fmt, expected) -> None:
    img = load_image(_uniform(tmp_path, mode, value, fmt))
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    assert {tuple(int(c) for c in px) for px in img.reshape(-1, 3)} == {expected}


def test_palette_transparency_lab_and_cmyk_jpeg(tmp_path) -> None:
    _palette(1, transparent=1).save(tmp_path / "p_transparent.png")
    _palette(0, transparent=1).save(tmp_path / "p_opaque_entry.png")
    _palette(1, transparent=None).save(tmp_path / "p.png")
    assert tuple(load_image(tmp_path / "p_transparent.png")[5, 5]) == (255, 255, 255)
    assert tuple(load_image(tmp_path / "p_opaque_entry.png")[5, 5]) == (255, 0, 0)
    assert tuple(load_image(tmp_path / "p.png")[5, 5]) == (0, 0, 255)
    # modes no file format here writes, converted in memory
    from avtok.pipeline.media import to_display_rgb

    pa = _palette(1, transparent=None).convert("PA")
    pa.putalpha(0)
    assert tuple(to_display_rgb(pa)[5, 5]) == (255, 255, 255)
    assert tuple(to_display_rgb(Image.new("HSV", (4, 4), (0, 255, 255)))[0, 0]) == (255, 0, 0)
    # YCbCr (Pillow 12, which gradio pins, writes no YCbCr TIFF): Y=255 is white, Y=128 the grey 128
    assert tuple(to_display_rgb(Image.new("YCbCr", (4, 4), (255, 128, 128)))[0, 0]) == (255, 255, 255)
    assert tuple(to_display_rgb(Image.new("YCbCr", (4, 4), (128, 128, 128)))[0, 0]) == (128, 128, 128)
    # L*a*b* (a, b stored +128): L*=100 is white, L*=0 black, L*=50 the sRGB grey 119 (littlecms, ±1)
    for lab, rgb in (((255, 128, 128), (255, 255, 255)), ((0, 128, 128), (0, 0, 0)), ((128, 128, 128), (119, 119, 119))):
        got = load_image(_uniform(tmp_path, "LAB", lab, "tiff"))[5, 5].astype(int)
        assert np.abs(got - rgb).max() <= 1, (lab, got)
    # a CMYK JPEG (written with Adobe's inverted CMYK) reads back as cyan, not as its inverse
    got = load_image(_uniform(tmp_path, "CMYK", (255, 0, 0, 0), "jpg", quality=95))[5, 5].astype(int)
    assert np.abs(got - (0, 255, 255)).max() <= 3, got


def _png_header_only(path, width: int, height: int):
    """A PNG whose header claims width×height (1-bit grey) but holds almost no data: a decompression bomb's
    shape, cheap to make. Decoding it would need width·height bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_huge_images_refused_or_reduced_before_decoding(tmp_path) -> None:
    from avtok.pipeline.media import MAX_IMAGE_PIXELS, _reduce_while_decoding

    with pytest.raises(MediaError, match="bomb.png: image too large to decode safely"):
        load_image(_png_header_only(tmp_path / "bomb.png", 30000, 30000))  # 900 MP: PIL's own hard limit
    with pytest.raises(MediaError, match=r"big.png: image too large \(10000×10000 = 100 MP"):
        load_image(_png_header_only(tmp_path / "big.png", 10000, 10000))  # over our limit: refused unread
    # a JPEG over the limit is decoded at half scale by the JPEG decoder itself (memory bounded)
    Image.new("L", (12000, 8000), 90).save(tmp_path / "big.jpg", quality=50)
    with pytest.warns(Image.DecompressionBombWarning), Image.open(tmp_path / "big.jpg") as im:
        _reduce_while_decoding(im, tmp_path / "big.jpg")
        assert im.size == (6000, 4000) and 6000 * 4000 <= MAX_IMAGE_PIXELS
    img = load_image(tmp_path / "big.jpg")
    assert img.shape == (256, 256, 3) and np.abs(img.astype(int) - 90).max() <= 2


@pytest.mark.parametrize("size", [(1, 60000), (60000, 1), (3, 40000)])
def test_extreme_aspect_ratios_cost_only_the_crop(tmp_path, size) -> None:
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[..., 1] = 200  # green everywhere
    Image.fromarray(arr).save(tmp_path / "thin.png")
    img = load_image(tmp_path / "thin.png")
    assert img.shape == (256, 256, 3) and {tuple(int(c) for c in p) for p in img.reshape(-1, 3)} == {(0, 200, 0)}


def test_generate_confidence_reaches_the_sampler(trained, tmp_path, monkeypatch) -> None:
    import avtok.model.generate as G

    seen = []
    real = G.sample

    def recording(*args, **kw):
        seen.append(kw["confidence"])
        return real(*args, **kw)

    monkeypatch.setattr(G, "sample", recording)
    media, ckpt = trained["media"], trained["ckpt"]
    for kind in ("guided", "conditional"):
        res = _cli(["--image", media / "foo.jpg", "--checkpoint", ckpt, "--steps", 2, "--confidence", kind,
                    "--out", tmp_path / f"{kind}.wav"])
        assert res.exit_code == 0, res.output
        assert sf.info(tmp_path / f"{kind}.wav").frames == 848 * 256
    res = _cli(["--image", media / "foo.jpg", "--checkpoint", ckpt, "--steps", 2, "--out", tmp_path / "x.wav"])
    assert res.exit_code == 0, res.output
    assert seen == ["guided", "conditional", "guided"]  # the paper's order unless asked
    res = _cli(["--image", media / "foo.jpg", "--checkpoint", ckpt, "--confidence", "uncond", "--out", tmp_path / "b.wav"])
    assert res.exit_code == 2 and "--confidence" in res.output and not (tmp_path / "b.wav").exists()
