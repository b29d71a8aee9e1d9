"""Hostile-but-realistic input (issue 11): every probe asserts the exit code, exactly one `Error:` line
naming the culprit, no traceback, and that no file was lost, changed or left behind.

Probes run in-process through click's CliRunner (fast); a few also run as real processes to check
what the terminal shows (stderr, no traceback).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root (hidden and temporary ones too): relative path -> (sha256, mode)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file()}


def probe(root: Path, args: list, *names: str, code: int | None = None) -> str:
    """Run `avtok ARGS`; assert a non-zero exit (== code if given), one `Error:` line holding every one of
    `names`, no traceback, and no file under root added, removed or changed. Returns the Error line."""
    from avtok.cli.main import cli

    before = snapshot(root)
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
    assert res.exit_code != 0 and (code is None or res.exit_code == code), (args, res.exit_code, res.output)
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, (args, res.output)
    assert "Traceback" not in res.output, res.output
    for name in names:
        assert name in errors[0], (name, errors[0])
    assert snapshot(root) == before, args
    return errors[0]


def run_real(args: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avtok.cli.main", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture()
def home(tmp_path):
    """A user's folder: a photo, their own recording beside it, a regular file, a fake checkpoint."""
    Image.new("RGB", (320, 240), (200, 40, 40)).save(tmp_path / "dog.jpg")
    (tmp_path / "dog.wav").write_bytes(b"RIFF my own recording of the dog")
    (tmp_path / "notes.txt").write_text("a regular file\n")
    (tmp_path / "model.pt").write_bytes(b"not used: the probes stop before loading it")
    return tmp_path


# ------------------------------------------------------------------------------------ generate (item 2)
def test_generate_never_replaces_an_existing_output(home):
    probe(home, ["generate", "--image", home / "dog.jpg", "--checkpoint", home / "model.pt"],
          "dog.wav", "--overwrite", code=1)
    (home / "mine.png").write_bytes(b"user's picture")  # the png written beside mine.wav
    probe(home, ["generate", "--image", home / "dog.jpg", "--checkpoint", home / "model.pt", "--out",
                 home / "mine.wav"], "mine.png", code=1)
    (home / "x.png").write_bytes(b"user's picture")
    probe(home, ["generate", "--audio", home / "dog.wav", "--checkpoint", home / "model.pt", "--out", home / "x.png"],
          "x.png", code=1)


@pytest.mark.parametrize("args, option", [
    (["--cfg", "nan"], "--cfg"),  # exited 0 with silence before
    (["--cfg", "inf"], "--cfg"),
    (["--temperature", "-1"], "--temperature"),
    (["--steps", "0"], "--steps"),
    (["--seed", "-3"], "--seed"),
    (["--device", "banana"], "--device"),
    (["--device", "cuda:7"], "--device"),
    (["--out", "notes.txt/out.wav"], "--out"),  # under a regular file
    (["--vocoder", "missing.pt"], "--vocoder"),
])
def test_generate_bad_options(home, args, option):
    args = [a if not a.startswith("notes.txt") else home / a for a in args]
    probe(home, ["generate", *args, "--image", home / "dog.jpg", "--checkpoint", home / "model.pt"], option, code=2)


def _png_bomb(path: Path, width: int, height: int) -> Path:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_generate_hostile_images(home):
    for name, (w, h) in {"bomb.png": (40000, 40000), "big.png": (12000, 9000)}.items():
        _png_bomb(home / name, w, h)
        probe(home, ["generate", "--image", home / name, "--checkpoint", home / "model.pt", "--out", home / "o.wav"],
              name, "too large", code=1)
    (home / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    probe(home, ["generate", "--image", home / "junk.jpg", "--checkpoint", home / "model.pt", "--out", home / "o.wav"],
          "junk.jpg", code=1)


# ------------------------------------------------------------------------------------ manifest (item 7)
def _clip_folder(root: Path) -> Path:
    clips = root / "clips"
    clips.mkdir()
    (clips / "abcdefghijk_000030.mp4").write_bytes(b"x")
    return clips


def test_manifest_hostile_inputs(home):
    clips = _clip_folder(home)
    (home / "binary.csv").write_bytes(bytes(range(256)) * 64)
    probe(home, ["manifest", "--videos", clips, "--vggsound-csv", home / "binary.csv", "--out", home / "m.csv"],
          "binary.csv", "UTF-8", code=1)
    probe(home, ["manifest", "--videos", clips, "--out", home / "notes.txt" / "m.csv"], "--out", "notes.txt", code=2)
    probe(home, ["manifest", "--videos", clips, "--out", home / "clips"], "--out", code=2)  # a folder
    (home / "m.parquet").write_bytes(b"someone's manifest")
    probe(home, ["manifest", "--videos", clips, "--out", home / "m.parquet"], "m.parquet", "--overwrite", code=1)
    (home / "neg.csv").write_text("abcdefghijk,-5,dog,train\n")
    probe(home, ["manifest", "--videos", clips, "--vggsound-csv", home / "neg.csv", "--out", home / "n.csv"],
          "neg.csv", "start", code=1)


def test_manifest_disk_full_names_the_file(home, monkeypatch):
    import errno

    import avtok.model.files as files

    def full(path, data, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", f"{path}.tmp")

    monkeypatch.setattr(files, "atomic_write_bytes", full)
    line = probe(home, ["manifest", "--videos", _clip_folder(home), "--out", home / "m.csv"], "m.csv", "No space left",
                 code=1)
    assert ".tmp" not in line


@pytest.mark.parametrize("start", ["inf", "-5", "nan", "1e999", "ten"])
def test_extract_refuses_bad_start_values(home, start):
    clips = _clip_folder(home)
    (home / "rows.csv").write_text(f"video_id,path,start_s\nclip,{clips / 'abcdefghijk_000030.mp4'},{start}\n")
    probe(home, ["extract", "--videos", home / "rows.csv", "--out", home / "extracted", "--no-ray"],
          "rows.csv", "row 1", "start", code=1)
    assert not (home / "extracted").exists()


def test_bom_manifest_is_read(home):
    """A csv saved by Excel (UTF-8 with BOM) used to say 'video_id column missing'."""
    from avtok.pipeline.manifest import load_inputs

    clips = _clip_folder(home)
    (home / "bom.csv").write_bytes("\ufeffvideo_id,path,start_s\nclip,clips/abcdefghijk_000030.mp4,1.5\n".encode())
    [row] = load_inputs(home / "bom.csv")
    assert (row.video_id, row.path, row.start_s) == ("clip", str(clips / "abcdefghijk_000030.mp4"), 1.5)


# ------------------------------------------------------------------------------------ tokens (item 7)
def _token_folder(root: Path, top_value: int, codebook: int = 32) -> Path:
    """A token folder whose index and shard both say `codebook`, holding a token `top_value` (made by hand:
    the writer refuses out-of-range values, a damaged or foreign shard does not ask)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from avtok.model.files import sha256_file
    from avtok.model.geometry import AUDIO_TOKENS, IMAGE_TOKENS, MEL_PARAMS, N_FRAMES
    from avtok.model.token_shards import _fixed_list, make_meta, schema, write_token_index

    rec = {"kind": "patch-kmeans", "fingerprint": "0" * 64, "path": "k.safetensors"}
    meta = make_meta(image_tokenizer=rec, audio_tokenizer=rec, mel=MEL_PARAMS, image_codebook=codebook,
                     audio_codebook=codebook)
    n = 4
    image = np.zeros((n, N_FRAMES * IMAGE_TOKENS), np.uint16)
    image[1, 7] = top_value
    audio = np.ones((n, AUDIO_TOKENS), np.uint16)
    folder = root / "tokens"
    folder.mkdir()
    table = pa.Table.from_arrays([pa.array([f"c{i}" for i in range(n)]), pa.array(["a"] * n),
                                  pa.array(["test"] * n), _fixed_list(image, N_FRAMES * IMAGE_TOKENS),
                                  _fixed_list(audio, AUDIO_TOKENS)], schema=schema(meta))
    path = folder / "tokens-000000.parquet"
    pq.write_table(table, path)
    write_token_index(folder, meta, [{"file": path.name, "rows": n, "sha256": sha256_file(path),
                                      "splits": {"test": n}}])
    return folder


def test_out_of_range_tokens_are_a_clear_error(home):
    from avtok.model.token_shards import ShardError, load_tokens

    (home / "ok").mkdir()
    ok = _token_folder(home / "ok", top_value=31)
    assert load_tokens(ok, split="test").image.max() == 31
    bad_root = home / "bad"
    bad_root.mkdir()
    bad = _token_folder(bad_root, top_value=40)
    with pytest.raises(ShardError, match="image token 40 is outside the image codebook of 32"):
        load_tokens(bad, split="test")
    probe(home, ["eval", "--checkpoint", home / "model.pt", "--shards", bad, "--out", home / "eval.json"],
          "tokens-000000.parquet", "image token 40", code=1)


# ------------------------------------------------------------------------------------ other commands' options
@pytest.mark.parametrize("args, option", [
    (["train", "--batch-size", "0", "--dry-run"], "--batch-size"),
    (["train", "--ckpt-every", "0", "--dry-run"], "--ckpt-every"),
    (["train", "--device", "banana", "--dry-run"], "--device"),
    (["train", "--epochs", "nan", "--dry-run"], "--epochs"),
    (["train", "--out", "notes.txt/run", "--dry-run"], "--out"),
    (["tokenize", "--device", "cuda:1"], "--device"),
    (["eval", "--cfg-scales", "0,nan"], "--cfg-scales"),
    (["extract", "--out", "notes.txt/x", "--videos", "."], "--out"),
    (["demo", "--cfg", "inf"], "--cfg"),
])
def test_option_values_stop_at_parsing(home, args, option):
    args = [home / a if a.startswith("notes.txt") else a for a in args]
    probe(home, args, option, code=2)


# ------------------------------------------------------------------------------------ as a real process
def test_real_process_shows_one_line_on_stderr(home):
    for args, name in ((["generate", "--image", home / "dog.jpg", "--checkpoint", home / "model.pt", "--cfg", "nan"],
                        "--cfg"),
                       (["generate", "--image", home / "dog.jpg", "--checkpoint", home / "model.pt"], "dog.wav")):
        before = snapshot(home)
        proc = run_real(args, home)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
        assert proc.returncode in (1, 2) and len(errors) == 1 and name in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        assert snapshot(home) == before
