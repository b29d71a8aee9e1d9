"""Hostile-but-realistic use of `avtok extract` and `avtok tokenize`: odd video ids, failed shards,
changed extractions, busy or foreign output folders, an unreachable cluster.

Each probe asserts the exit code, one `Error:` line naming the key fact and no traceback (where it is
an error), and the files before/after.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from avtok.cli.main import cli
from avtok.model.files import LOCK_NAME, folder_lock, write_json
from avtok.model.tokenizers.patch_kmeans import fit_patch_kmeans
from avtok.pipeline.extracted import ExtractedSample, read_extracted_shard, write_extracted_shard
from avtok.pipeline.manifest import ManifestRow, write_manifest
from click.testing import CliRunner
from media import make_clip, make_junk
from test_kmeans import make_frames, make_mels

HOSTILE_IDS = [
    "x" * 200,  # longer than a plain tar name (100) and than the old limit (~89)
    "ünïcødé 视频 🎬",
    "with spaces and, commas",
    "a/b/c",
    "../../escape",
    "/abs/olute",
    "a.b",  # sanitises like the next one: keys must stay unique
    "a_b",
]


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_ok(res) -> None:
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output


def assert_error(res, code: int, *facts: str) -> str:
    """Exit `code`, exactly one `Error:` line that names every fact, no traceback; returns the line."""
    assert res.exit_code == code, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.output
    for fact in facts:
        assert fact in errors[0], errors[0]
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit), res.output
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (but the lock file, whose text names the last holder) → its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A manifest of hostile ids (one small clip each), their extraction, and a k-means tokenizer."""
    root = tmp_path_factory.mktemp("hostile")
    clip = make_clip(root / "v" / "clip.mp4", size=(160, 120), fps=10, duration=10)
    rows = [ManifestRow(vid, str(clip), 0.0, f"label {i}", "train") for i, vid in enumerate(HOSTILE_IDS)]
    manifest = write_manifest(rows, root / "manifest.csv")
    rng = np.random.default_rng(0)
    km = fit_patch_kmeans(make_frames(8, rng), make_mels(8, rng), root / "km.safetensors", k=16, iters=2,
                          max_points=1024)
    extracted = root / "extracted"
    assert_ok(invoke("extract", "--videos", manifest, "--out", extracted, "--shard-size", 3, "--no-ray"))
    return dict(root=root, clip=clip, manifest=manifest, km=km, extracted=extracted)


def tokenize_args(extracted: Path, out: Path, km: Path, *extra: str) -> list:
    return ["tokenize", "--extracted", extracted, "--out", out, "--image-tokenizer", km, "--audio-tokenizer", km,
            "--no-ray", *extra]


def test_any_video_id_round_trips_extract_to_tokenize(world, tmp_path):
    ids = []
    keys = []
    for tar in sorted(world["extracted"].glob("shard-*.tar")):
        for s in read_extracted_shard(tar, decode_frames=False):
            ids.append(s.meta["video_id"])
            keys.append(s.key)
    assert ids == HOSTILE_IDS
    assert len(set(keys)) == len(keys) and all("/" not in k and "." not in k for k in keys)
    tokens = tmp_path / "tokens"
    assert_ok(invoke(*tokenize_args(world["extracted"], tokens, world["km"])))
    got = [v for p in sorted(tokens.glob("tokens-*.parquet")) for v in pq.read_table(p)["video_id"].to_pylist()]
    assert got == HOSTILE_IDS
    # nothing was written outside the two output folders
    assert sorted(p.name for p in world["root"].iterdir()) == ["extracted", "km.safetensors", "manifest.csv", "v"]


def test_rerun_into_a_new_folder_is_byte_identical(world, tmp_path):
    again = tmp_path / "again"
    assert_ok(invoke("extract", "--videos", world["manifest"], "--out", again, "--shard-size", 3, "--no-ray"))
    names = sorted(p.name for p in world["extracted"].glob("shard-*.tar"))
    assert names == sorted(p.name for p in again.glob("shard-*.tar")) and len(names) == 3
    for name in names:
        assert (again / name).read_bytes() == (world["extracted"] / name).read_bytes(), name


def test_outputs_get_the_umask_permissions(world):
    for p in world["extracted"].iterdir():
        if p.is_file() and p.name != LOCK_NAME:
            assert p.stat().st_mode & 0o777 == 0o666 & ~_umask(), p.name


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_failed_shard_exits_3_and_tokenize_refuses_the_incomplete_extraction(world, tmp_path, monkeypatch):
    import avtok.pipeline.extract as ex

    real = ex.sha256_file

    def broken(path):
        if Path(path).name == "shard-000001.tar":
            raise OSError("disk on fire")
        return real(path)

    monkeypatch.setattr(ex, "sha256_file", broken)
    out = tmp_path / "ex"
    res = invoke("extract", "--videos", world["manifest"], "--out", out, "--shard-size", 3, "--no-ray")
    assert_error(res, 3, "1 shard(s) failed")
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] is False and index["counts"]["shards_failed"] == 1
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert [e["video_id"] for e in errors] == HOSTILE_IDS[3:6] and {e["kind"] for e in errors} == {"shard-failed"}

    tokens = tmp_path / "tokens"
    assert_error(invoke(*tokenize_args(out, tokens, world["km"])), 1, "incomplete", "--allow-incomplete")
    assert not tokens.exists() or snapshot(tokens) == {}
    assert_ok(invoke(*tokenize_args(out, tokens, world["km"], "--allow-incomplete")))
    tindex = json.loads((tokens / "index.json").read_text())
    assert (tindex["allow_incomplete"], tindex["extracted_complete"], tindex["rows"]) == (True, False, 5)


def test_changed_extraction_redoes_exactly_the_stale_token_shards(world, tmp_path):
    ex = tmp_path / "ex"
    shutil.copytree(world["extracted"], ex)
    tokens = tmp_path / "tokens"
    assert_ok(invoke(*tokenize_args(ex, tokens, world["km"])))
    before = snapshot(tokens)
    # replace shard 1 by another extraction of other clips (as a re-extraction elsewhere would)
    samples = list(read_extracted_shard(ex / "shard-000001.tar"))
    for s in samples:
        s.meta["video_id"] = "new " + s.meta["video_id"]
        s.frames = 255 - s.frames
    write_extracted_shard(ex / "shard-000001.tar", samples)
    index = json.loads((ex / "index.json").read_text())
    index["shards"][1]["sha256"] = __import__("avtok.model.files", fromlist=["x"]).sha256_file(ex / "shard-000001.tar")
    write_json(ex / "index.json", index)
    res = invoke(*tokenize_args(ex, tokens, world["km"]))
    assert_ok(res)
    assert "redid 1 whose extracted shard changed: tokens-000001.parquet" in res.output
    after = snapshot(tokens)
    assert after["tokens-000000.parquet"] == before["tokens-000000.parquet"]
    assert after["tokens-000002.parquet"] == before["tokens-000002.parquet"]
    assert after["tokens-000001.parquet"] != before["tokens-000001.parquet"]
    ids = pq.read_table(tokens / "tokens-000001.parquet")["video_id"].to_pylist()
    assert ids == ["new " + v for v in HOSTILE_IDS[3:6]]
    entry = json.loads((tokens / "index.json").read_text())["shards"][1]
    assert entry["source"] == {"file": "shard-000001.tar", "sha256": index["shards"][1]["sha256"]}


def test_all_failed_shard_tokenizes_to_an_empty_token_shard(world, tmp_path):
    make_junk(tmp_path / "v" / "junk1.mp4")
    make_junk(tmp_path / "v" / "junk2.mp4", seed=1)
    ex, tokens = tmp_path / "ex", tmp_path / "tokens"
    assert_ok(invoke("extract", "--videos", tmp_path / "v", "--out", ex, "--no-ray"))
    assert list(read_extracted_shard(ex / "shard-000000.tar")) == []
    assert_ok(invoke(*tokenize_args(ex, tokens, world["km"])))
    table = pq.read_table(tokens / "tokens-000000.parquet")
    assert table.num_rows == 0 and table.schema.field("image_tokens").type.list_size == 2560
    assert json.loads((tokens / "index.json").read_text())["rows"] == 0


@pytest.mark.parametrize("command", ["extract", "tokenize"])
def test_busy_output_folder_stops_at_once_naming_the_holder(world, tmp_path, command):
    out = tmp_path / "out"
    out.mkdir()
    name = "shard-000000.tar" if command == "extract" else "tokens-000000.parquet"
    other_temp = out / f".{name}.abc123.tmp"  # in flight in the holder's run
    other_temp.write_bytes(b"half a tar")
    before = snapshot(out)
    args = (["extract", "--videos", world["manifest"], "--out", out, "--no-ray"] if command == "extract"
            else tokenize_args(world["extracted"], out, world["km"]))
    with folder_lock(out, "the other run"):
        res = invoke(*args)
    assert_error(res, 1, str(out), f"pid {os.getpid()}", "the other run")
    assert snapshot(out) == before  # the holder's temporary file survived


@pytest.mark.parametrize("command", ["extract", "tokenize"])
def test_foreign_output_folder_is_refused_unless_overwrite(world, tmp_path, command):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("months of work")
    (out / "index.json").write_text('{"mine": true}')
    before = snapshot(out)
    args = (["extract", "--videos", world["manifest"], "--out", out, "--no-ray"] if command == "extract"
            else tokenize_args(world["extracted"], out, world["km"]))
    assert_error(invoke(*args), 1, str(out), "--overwrite")
    assert snapshot(out) == before
    assert_ok(invoke(*args, "--overwrite"))
    assert (out / "thesis.tex").read_text() == "months of work"  # --overwrite replaces only our own names


def test_other_manifest_into_the_same_folder_needs_overwrite(world, tmp_path):
    out = tmp_path / "ex"
    shutil.copytree(world["extracted"], out)
    before = snapshot(out)
    other = write_manifest([ManifestRow("only", str(world["clip"]))], tmp_path / "other.csv")
    assert_error(invoke("extract", "--videos", other, "--out", out, "--no-ray"), 1, str(out), "--overwrite")
    assert snapshot(out) == before
    assert_ok(invoke("extract", "--videos", other, "--out", out, "--no-ray", "--overwrite"))
    assert sorted(p.name for p in out.glob("shard-*.tar")) == ["shard-000000.tar"]
    assert [s.meta["video_id"] for s in read_extracted_shard(out / "shard-000000.tar", decode_frames=False)] == ["only"]


def test_out_is_a_file_or_under_a_file(world, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("keep")
    assert invoke("extract", "--videos", world["manifest"], "--out", f, "--no-ray").exit_code == 2  # click: not a dir
    assert_error(invoke("extract", "--videos", world["manifest"], "--out", f / "sub", "--no-ray"), 2, str(f))  # OUT_DIR refuses it at parse time
    assert_error(invoke(*tokenize_args(world["extracted"], f / "sub", world["km"])), 2, str(f))
    assert f.read_text() == "keep"


@pytest.mark.parametrize("command", ["extract", "tokenize"])
def test_unreachable_address_is_one_error_line(world, tmp_path, command):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    out = tmp_path / "out"
    args = (["extract", "--videos", world["manifest"], "--out", out] if command == "extract"
            else ["tokenize", "--extracted", world["extracted"], "--out", out, "--image-tokenizer", world["km"],
                  "--audio-tokenizer", world["km"]])
    assert_error(invoke(*args, "--address", address), 1, address)
    assert not any(out.glob("shard-*")) and not any(out.glob("tokens-*"))


def test_sample_json_keeps_the_id_when_the_key_cannot(tmp_path):
    rng = np.random.default_rng(0)
    frames, mel = make_frames(10, rng), make_mels(1, rng)[0]
    vid = "ü/../" + "y" * 300
    write_extracted_shard(tmp_path / "s.tar", [ExtractedSample("u_____y", frames, mel, {"video_id": vid})])
    (back,) = read_extracted_shard(tmp_path / "s.tar")
    assert back.meta["video_id"] == vid and back.key == "u_____y"
    assert np.array_equal(back.mel, mel.astype(np.float16)) and back.frames.shape == (10, 256, 256, 3)


def test_kept_audio_is_read_back_or_skipped_on_request(tmp_path):
    rng = np.random.default_rng(1)
    frames, mel = make_frames(10, rng), make_mels(1, rng)[0]
    audio = (rng.integers(-16384, 16384, 220500) / 32768).astype(np.float32)  # exact in 16-bit FLAC
    write_extracted_shard(tmp_path / "s.tar", [ExtractedSample("k", frames, mel, {}, audio)])
    (full,) = read_extracted_shard(tmp_path / "s.tar")
    assert full.audio.dtype == np.float32 and np.array_equal(full.audio, audio)
    (light,) = read_extracted_shard(tmp_path / "s.tar", decode_audio=False)
    assert light.audio is None and np.array_equal(light.frames, full.frames) and np.array_equal(light.mel, full.mel)


def test_fit_kmeans_does_not_replace_an_existing_file(world, tmp_path):
    out = tmp_path / "codebooks.safetensors"
    out.write_bytes(b"someone else's file")
    args = ["tokenizer", "fit-kmeans", "--extracted", world["extracted"], "--out", out, "--k", 4, "--clips", 2,
            "--iters", 1]
    assert_error(invoke(*args), 1, str(out), "--overwrite")
    assert out.read_bytes() == b"someone else's file"
    assert_ok(invoke(*args, "--overwrite"))
    assert not out.read_bytes().startswith(b"someone")
