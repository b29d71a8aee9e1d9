"""`avtok inspect` on real extract/tokenize output: contact sheets hold exactly the shard contents,
wavs the stored audio, and stats.json the folder's counts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from av_folders import shared_folders
from avtok.model.generate import colorize
from avtok.pipeline.inspect import MEL_SCALE, inspect_folder, sample_boxes, token_usage, write_inspection
from PIL import Image

SHEET_WIDTH = 2612  # 8 + 10·256 + 9·4 + 8
ROW = 450  # caption 22 + frames 256 + gap 4 + mel 80·2 + margin 8


def _inspect(args: list) -> str:
    from avtok.cli.main import cli
    from click.testing import CliRunner

    res = CliRunner().invoke(cli, ["inspect", *map(str, args)])
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return shared_folders(tmp_path_factory)


def _sheet(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def _mel_pixels(mel: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(colorize(mel), MEL_SCALE, 0), MEL_SCALE, 1)


def test_inspect_extracted_folder(folders, tmp_path) -> None:
    from avtok.pipeline.extracted import read_extracted_shard

    out = tmp_path / "ex"
    printed = _inspect([folders["extracted"], "--samples", 3, "--out", out])
    sheet = _sheet(out / "contact_sheet.png")
    assert sheet.shape == (8 + 3 * ROW, SHEET_WIDTH, 3)
    shard_samples = [s for tar in sorted(folders["extracted"].glob("*.tar")) for s in read_extracted_shard(tar)]
    assert len(shard_samples) == 6
    for row, sample in enumerate(shard_samples[:3]):
        boxes = sample_boxes(row)
        for (y, x), frame in zip(boxes["frames"], sample.frames, strict=True):
            assert np.array_equal(sheet[y:y + 256, x:x + 256], frame)
        y, x, h, w = boxes["mel"]
        assert (h, w) == (160, 1696)
        assert np.array_equal(sheet[y:y + h, x:x + w], _mel_pixels(sample.mel))
        # kept audio is written as is (16-bit wav)
        wav, sr = sf.read(out / "wav" / f"{row}-{sample.key}.wav", dtype="float32")
        assert sr == 22050 and np.abs(wav - sample.audio).max() <= 1 / 32767 + 1e-6
    assert len(list((out / "wav").iterdir())) == 3

    stats = json.loads((out / "stats.json").read_text())
    errors = pq.read_table(folders["extracted"] / "errors.parquet").to_pylist()
    assert [e["video_id"] for e in errors] == ["junk"]
    assert stats["errors"] == {"total": 1, "by_kind": {errors[0]["kind"]: 1}, "by_stage": {errors[0]["stage"]: 1}}
    assert (stats["kind"], stats["clips"], stats["shards"], stats["videos"]) == ("extracted", 6, 2, 7)
    assert stats["labels"] == {"noise": 3, "tone": 3} and stats["splits"] == {"test": 2, "train": 4}
    # the 4 s clip: short video and short audio, one clip with two warnings
    assert stats["warnings"] == {"clips": 1, "total": 2, "by_kind": {
        "video ends before frame # of #: repeated the last frame": 1, "audio is # s < # s: zero-padded": 1}}
    assert json.loads(printed[printed.index("{\n"):printed.rindex("}") + 1]) == stats  # printed too


def test_inspect_token_folder(folders, tmp_path) -> None:
    import torch
    from avtok.model.token_shards import load_tokens
    from avtok.model.tokenizers import load_tokenizer, output_to_frames, output_to_spec01

    out = tmp_path / "tok"
    _inspect([folders["tokens"], "--samples", 2, "--out", out])
    sheet = _sheet(out / "contact_sheet.png")
    assert sheet.shape == (8 + 2 * ROW, SHEET_WIDTH, 3)
    data = load_tokens(folders["tokens"], split=None)
    img_tok = load_tokenizer(folders["kmeans"], "patch-kmeans", modality="image")
    aud_tok = load_tokenizer(folders["kmeans"], "patch-kmeans", modality="audio")
    for row in range(2):
        frames = output_to_frames(img_tok.decode(torch.from_numpy(data.image[row].astype(np.int64))))
        mel = output_to_spec01(aud_tok.decode(torch.from_numpy(data.audio[row:row + 1].astype(np.int64))))[0]
        boxes = sample_boxes(row)
        for (y, x), frame in zip(boxes["frames"], frames, strict=True):
            assert np.array_equal(sheet[y:y + 256, x:x + 256], frame)
        y, x, h, w = boxes["mel"]
        assert np.array_equal(sheet[y:y + h, x:x + w], _mel_pixels(mel))
        wav, sr = sf.read(out / "wav" / f"{row}-{data.video_ids[row]}.wav")
        assert sr == 22050 and wav.shape == (848 * 256,) and np.sqrt(np.mean(wav ** 2)) > 1e-3

    stats = json.loads((out / "stats.json").read_text())
    assert (stats["kind"], stats["clips"], stats["shards"]) == ("tokens", 6, 2)
    assert stats["labels"] == {"noise": 3, "tone": 3} and stats["splits"] == {"test": 2, "train": 4}
    assert stats["errors"] == {"total": 0, "by_kind": {}}
    for modality, tokens in (("image", data.image), ("audio", data.audio)):
        counts = np.array(sorted(Counter(tokens.ravel().tolist()).values()), float)
        p = counts / counts.sum()
        usage = stats["token_usage"][modality]
        assert usage["codebook"] == 16 and usage["max_bits"] == 4.0 and usage["used"] == len(counts)
        assert usage["entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-4)
    assert stats["tokenizers"]["image"]["path"] == str(folders["kmeans"])


def test_token_usage_exact() -> None:
    assert token_usage(np.array([0, 0, 1, 1]), 4) == {"codebook": 4, "used": 2, "entropy_bits": 1.0,
                                                       "max_bits": 2.0, "perplexity": 2.0}
    assert token_usage(np.arange(8), 8)["entropy_bits"] == 3.0
    assert token_usage(np.zeros(10, int), 1024) == {"codebook": 1024, "used": 1, "entropy_bits": 0.0,
                                                    "max_bits": 10.0, "perplexity": 1.0}


def test_inspect_without_kept_audio_vocodes_the_mel(tmp_path) -> None:
    from avtok.model.files import write_json
    from avtok.pipeline.extracted import ExtractedSample, write_extracted_shard

    rng = np.random.default_rng(0)
    folder = tmp_path / "extracted"
    folder.mkdir()
    sample = ExtractedSample("clip", rng.integers(0, 255, (10, 256, 256, 3), dtype=np.uint8),
                             rng.random((80, 848)).astype(np.float16), {"video_id": "clip", "label": "x",
                                                                        "split": "train", "warnings": []})
    write_extracted_shard(folder / "shard-000000.tar", [sample])
    write_json(folder / "index.json", {"kind": "avtok-extracted", "counts": {"videos": 1}, "keep_audio": False})
    seen = []

    def vocoder(mel):
        seen.append(np.array(mel))
        return np.full((1, 848 * 256), 0.25, np.float32)

    ins = inspect_folder(folder, samples=5, vocoder=vocoder)
    assert len(seen) == 1 and np.array_equal(seen[0], sample.mel.astype(np.float32)[None])
    written = write_inspection(ins, tmp_path / "out")
    wav, _ = sf.read(written[2], dtype="float32")
    assert written[2].name == "0-clip.wav" and np.allclose(wav, 0.25, atol=1 / 32767)
    assert ins.stats["errors"] == {"total": 0, "by_kind": {}, "by_stage": {}}  # no errors.parquet: none recorded
    assert ins.sheet.shape == (8 + ROW, SHEET_WIDTH, 3)


def test_inspect_bad_folders(folders, tmp_path) -> None:
    import shutil

    from avtok.cli.main import cli
    from click.testing import CliRunner

    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(cli, ["inspect", str(empty), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "empty" in res.output
    assert "index.json" in res.output and not (tmp_path / "o").exists()
    res = CliRunner().invoke(cli, ["inspect", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "missing" in res.output
    # the tokenizer file moved since tokenize: named, and usable once given
    moved = tmp_path / "moved.safetensors"
    shutil.move(folders["kmeans"], moved)
    try:
        res = CliRunner().invoke(cli, ["inspect", str(folders["tokens"]), "--samples", 1, "--out", str(tmp_path / "o")])
        assert res.exit_code == 1 and folders["kmeans"].name in res.output and "--image-tokenizer" in res.output
        _inspect([folders["tokens"], "--samples", 1, "--out", tmp_path / "o", "--image-tokenizer", moved,
                  "--audio-tokenizer", moved])
    finally:
        shutil.move(moved, folders["kmeans"])
    assert (tmp_path / "o" / "contact_sheet.png").is_file()
