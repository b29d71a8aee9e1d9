"""`avtok extract` end to end: the zoo of odd/broken inputs, resumption after a kill (extract against a
Ray cluster address: tests/test_faults.py, on a two-node cluster)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from avtok.cli.extract import extract
from avtok.pipeline.extract import run_extract, unique_keys
from avtok.pipeline.extracted import read_extracted_shard
from avtok.pipeline.manifest import ManifestRow, write_manifest
from click.testing import CliRunner
from media import ZOO_ERRORS, make_clip, make_junk, make_zoo

AVTOK = [sys.executable, "-m", "avtok.cli.main"]
SUMMARY = re.compile(r"extracted (\d+)/(\d+) videos \((\d+) errors, (\d+) with warnings\)")


def _samples(out: Path) -> dict:
    return {s.key: s for tar in sorted(out.glob("shard-*.tar")) for s in read_extracted_shard(tar)}


def _errors(out: Path) -> list[dict]:
    return pq.read_table(out / "errors.parquet").to_pylist()


def _small_clips(folder: Path, n: int) -> list[Path]:
    return [make_clip(folder / f"c{i}.mp4", size=(160, 120), fps=10, duration=10) for i in range(n)]


@pytest.fixture(scope="module")
def local_ray():
    """One private local Ray (2 CPUs) for this module's in-process Ray runs, instead of a start-up per test:
    `extract` uses a Ray that is already running (and leaves it running); shut down after the module."""
    import ray
    from avtok.pipeline.runner import init_ray

    started = not ray.is_initialized()
    init_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_zoo_every_input_is_a_sample_or_an_error(tmp_path, local_ray):
    zoo = make_zoo(tmp_path / "zoo")
    out = tmp_path / "out"
    res = CliRunner().invoke(extract, ["--videos", str(tmp_path / "zoo"), "--out", str(out),
                                       "--shard-size", "4", "--workers", "2"])
    assert res.exit_code == 0, res.output
    m = SUMMARY.search(res.output)
    assert m, res.output
    n_samples, n_videos, n_errors, n_warned = map(int, m.groups())
    samples, errors = _samples(out), _errors(out)
    assert n_videos == len(zoo) and n_samples == len(samples) and n_errors == len(errors)
    assert n_samples + n_errors == n_videos
    by_id = {s.meta["video_id"]: s for s in samples.values()}
    err_ids = {e["video_id"] for e in errors}
    for name, path in zoo.items():
        vid = path.stem
        assert (vid in by_id) != (vid in err_ids), name
        assert (vid in err_ids) == (name in ZOO_ERRORS), name
    for e in errors:
        assert e["stage"] == "open" and "Invalid data" in e["message"] and e["path"].endswith(".mp4")
    for s in samples.values():
        assert s.frames.shape == (10, 256, 256, 3) and s.frames.dtype == np.uint8
        assert s.mel.shape == (80, 848) and s.mel.dtype == np.float16
        assert 0 <= s.mel.min() and s.mel.max() <= 1
        assert re.fullmatch(r"[A-Za-z0-9_\-]+", s.key)
    assert by_id["no_audio"].meta["warnings"] == ["no audio stream: silence"]
    assert by_id["no_audio"].meta["had_audio"] is False and by_id["no_audio"].mel.max() == 0
    assert any("repeated the last frame" in w for w in by_id["short4s"].meta["warnings"])
    assert any("corrupt packet" in w for w in by_id["garbage_middle"].meta["warnings"])
    assert by_id["truncated_faststart"].meta["warnings"]
    assert by_id["normal"].meta["warnings"] == [] and by_id["normal"].meta["audio_samples"] == 220500
    assert by_id["surround51"].meta["had_audio"] and by_id["surround51"].mel.max() > 0.3
    assert n_warned == sum(bool(s.meta["warnings"]) for s in samples.values())
    index = json.loads((out / "index.json").read_text())
    assert index["counts"]["samples"] == n_samples and index["counts"]["errors"] == n_errors
    assert index["complete"] and len(index["shards"]) == 4 and index["backend"] == "pyav"
    assert index["mel_params"]["n_mels"] == 80


def test_in_process_extract_options_and_rerun(tmp_path):
    clips = _small_clips(tmp_path / "v", 1) + [make_clip(tmp_path / "v" / "long.mp4", size=(160, 120), fps=10,
                                                          duration=11.5)]
    make_junk(tmp_path / "v" / "bad.mp4")
    make_clip(tmp_path / "v" / "mute.mp4", size=(160, 120), fps=10, audio=None)
    # two ids that sanitise to the same key, and a relative path in a csv manifest
    rows = [ManifestRow("a.b", str(clips[0]), 0.0, "dog, barking", "train"),
            ManifestRow("a_b", str(clips[1]), 1.0, "cat", "test"),
            ManifestRow("bad", str(tmp_path / "v" / "bad.mp4")),
            ManifestRow("mute", "v/mute.mp4"),
            ManifestRow("gone", str(tmp_path / "v" / "missing.mp4"))]
    manifest = write_manifest(rows, tmp_path / "m.csv")
    out = tmp_path / "out"
    s = run_extract(manifest, out, shard_size=2, in_process=True, keep_audio=True, strict=True)
    assert (s.videos, s.samples, s.errors, s.shards, s.shards_run) == (5, 2, 3, 3, 3)
    samples = _samples(out)
    assert sorted(samples) == ["a_b", "a_b_1"]
    assert samples["a_b"].meta["label"] == "dog, barking" and samples["a_b_1"].meta["start_s"] == 1.0
    assert samples["a_b"].audio.shape == (220500,)  # --keep-audio
    errs = {e["video_id"]: e for e in _errors(out)}
    assert errs["mute"]["stage"] == "strict" and errs["mute"]["kind"] == "no-audio"
    assert errs["bad"]["stage"] == "open" and errs["gone"]["stage"] == "open"
    assert "No such file" in errs["gone"]["message"]
    before = {p.name: p.read_bytes() for p in out.glob("shard-*.tar")}
    again = run_extract(manifest, out, shard_size=2, in_process=True, keep_audio=True, strict=True)
    assert (again.shards_run, again.shards_skipped, again.samples, again.errors) == (0, 3, 2, 3)
    assert len(_errors(out)) == 3  # rebuilt, not appended
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.tar")} == before
    with pytest.raises(ValueError, match="different shard_size"):
        run_extract(manifest, out, shard_size=3, in_process=True, keep_audio=True, strict=True)


def test_failed_shard_is_reported_then_redone(tmp_path, monkeypatch):
    import avtok.pipeline.extract as ex

    _small_clips(tmp_path / "v", 3)
    real = ex.sha256_file

    def flaky(path):
        if path.name == "shard-000001.tar":
            raise OSError("disk on fire")
        return real(path)

    monkeypatch.setattr(ex, "sha256_file", flaky)
    s = run_extract(tmp_path / "v", tmp_path / "out", shard_size=2, in_process=True)
    assert s.shards_failed == [(1, "OSError: disk on fire")] and (s.samples, s.errors) == (2, 1)
    assert "1 shard(s) FAILED" in s.line()
    (err,) = _errors(tmp_path / "out")
    assert (err["video_id"], err["stage"], err["kind"]) == ("c2", "shard", "shard-failed")
    monkeypatch.setattr(ex, "sha256_file", real)
    s = run_extract(tmp_path / "v", tmp_path / "out", shard_size=2, in_process=True)
    assert (s.samples, s.errors, s.shards_run, s.shards_skipped) == (3, 0, 1, 1)
    assert _errors(tmp_path / "out") == []


CRASHY = """
import os, pickle, sys
import avtok.pipeline.extract as ex
real = ex.extract_one
ex.extract_one = lambda row, **kw: os._exit(3) if row["key"] == "crash" else real(row, **kw)
with open(sys.argv[1], "rb") as f:
    job = pickle.load(f)
ex.process_shard(job, lambda **k: None)
"""


def test_video_that_kills_the_worker_twice_becomes_an_error(tmp_path):
    import pickle

    from avtok.pipeline.extract import crash_marker_path, plan_shards, process_shard

    a, b = _small_clips(tmp_path / "v", 2)
    rows = [ManifestRow("a", str(a)), ManifestRow("crash", str(a)), ManifestRow("b", str(b))]
    out = tmp_path / "out"
    out.mkdir()
    (job,) = plan_shards(rows, out, shard_size=10)
    (tmp_path / "job.pkl").write_bytes(pickle.dumps(job))
    for attempt in (1, 2):  # what Ray's retries do after a worker died
        proc = subprocess.run([sys.executable, "-c", CRASHY, str(tmp_path / "job.pkl")], capture_output=True)
        assert proc.returncode == 3, proc.stderr.decode()
        assert crash_marker_path(job.output).read_text().split() == ["crash"] * attempt
    stats = process_shard(job, lambda **k: None)  # third attempt: the crasher is skipped
    assert (stats.videos, stats.samples, stats.errors) == (3, 2, 1)
    assert stats.error_rows[0]["video_id"] == "crash" and stats.error_rows[0]["kind"] == "worker-crashed"
    assert not crash_marker_path(job.output).exists()
    # a new run (e.g. after Ctrl-C) forgets markers: nothing is skipped on the word of an old run
    job.output.unlink()  # (written by process_shard alone, not by an extract run: a foreign file to extract)
    crash_marker_path(out / "shard-000000.tar").write_text("crash\ncrash\n")
    s = run_extract(rows, out, shard_size=10, in_process=True)
    assert (s.samples, s.errors) == (3, 0)
    assert not crash_marker_path(job.output).exists()


def test_cli_help_lists_every_option():
    res = CliRunner().invoke(extract, ["--help"])
    assert res.exit_code == 0
    for opt in ("--videos", "--out", "--shard-size", "--backend", "--workers", "--address", "--keep-audio",
                "--strict", "--max-retries", "--no-ray"):
        assert opt in res.output


def test_unique_keys():
    assert unique_keys(["a.b", "a_b", "a/b", "ü", "_"]) == ["a_b", "a_b_1", "a_b_2", "_", "__1"]


@pytest.mark.slow
def test_resume_after_kill_gives_identical_shards(tmp_path, local_ray):
    _small_clips(tmp_path / "v", 6)
    ref, out = tmp_path / "ref", tmp_path / "out"
    args = ["--videos", str(tmp_path / "v"), "--shard-size", "2"]
    assert CliRunner().invoke(extract, [*args, "--out", str(ref), "--no-ray"]).exit_code == 0
    # killed in process (no Ray of its own to start and stop: the resume is the same per-shard bookkeeping;
    # tests/test_faults.py kills a Ray worker)
    proc = subprocess.Popen([*AVTOK, "extract", *args, "--out", str(out), "--no-ray"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "shard-000000.stats.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "first shard never finished"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "index.json").exists()  # really interrupted
    assert len(list(out.glob("*.stats.json"))) < 3
    res = CliRunner().invoke(extract, [*args, "--out", str(out), "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert "already done" in res.output
    names = sorted(p.name for p in ref.glob("shard-*.tar"))
    assert names == sorted(p.name for p in out.glob("shard-*.tar")) and len(names) == 3
    for name in names:
        assert (ref / name).read_bytes() == (out / name).read_bytes(), name
    assert not list(out.glob(".*.tmp"))
    a, b = json.loads((ref / "index.json").read_text()), json.loads((out / "index.json").read_text())
    assert a["counts"] == b["counts"] and a["shards"] == b["shards"] and a["counts"]["samples"] == 6
