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
    from avtok.pipeline.synthetic import COLOURS

    img = rng.integers(90, 130, (256, 256, 3)).astype(np.uint8)
    colour = np.array([int(COLOURS[k][i:i + 2], 16) for i in (0, 2, 4)], np.uint8)
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
