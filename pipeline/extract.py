"""`avtok extract`: manifest → numbered shards → a pool of Ray actors → `extracted/shard-{n:06d}.tar` (+ stats).

Layout of the output folder:
  shard-000000.tar, shard-000000.stats.json, ...   one per `shard_size` manifest rows
  plan.json        what the shards were cut from (manifest fingerprint, shard size, options):
                   a re-run with a different input or options into the same folder is refused
  errors.parquet   video_id, path, stage, kind, message (rebuilt from every shard's stats each run)
  index.json       counts, MEL_PARAMS, backend, shard list with sha256 (rebuilt each run)
  .shard-N.inflight  while a shard runs: the video being decoded (see process_shard); removed after
  .avtok.lock      held while a run writes the folder (a second run stops at once, naming the holder)
Every manifest row ends as a sample in its shard's tar or as an errors.parquet row. A shard that
exhausted its retries has its rows listed with stage "shard" and is redone by the next run; the
command then exits with code 3 (see cli/shard_progress.py). Format of the files: docs/formats.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avtok.model.files import avtok_version, read_json, sha256_file, write_json
from avtok.model.geometry import FRAME_SIZE, MEL_PARAMS, MEL_SHAPE, N_FRAMES

from .extracted import ExtractedSample, sanitize_key, shard_name
from .manifest import ManifestRow, load_inputs
from .output_folder import claimed, remove_outputs
from .runner import ProgressEvent, RunResult, ShardJob, ShardStats, run_shards

ERROR_COLUMNS = ("video_id", "path", "stage", "kind", "message")


def unique_keys(video_ids: list[str]) -> list[str]:
    """Sanitised, unique tar keys in manifest order (a clash gets `_1`, `_2`, ...)."""
    used: set[str] = set()
    keys = []
    for vid in video_ids:
        base = sanitize_key(vid)
        key, n = base, 0
        while key in used:
            n += 1
            key = f"{base}_{n}"
        used.add(key)
        keys.append(key)
    return keys


def plan_shards(rows: list[ManifestRow], out: Path, shard_size: int) -> list[ShardJob]:
    """Cut the manifest into fixed shards of `shard_size` rows (the unit of work and of resumption)."""
    if shard_size < 1:
        raise ValueError("shard_size must be ≥ 1")
    keys = unique_keys([r.video_id for r in rows])
    jobs = []
    for n, lo in enumerate(range(0, len(rows), shard_size)):
        payload = [dict(key=k, video_id=r.video_id, path=r.path, start_s=r.start_s, label=r.label, split=r.split)
                   for k, r in zip(keys[lo:lo + shard_size], rows[lo:lo + shard_size], strict=True)]
        jobs.append(ShardJob(index=n, payload=payload, output=out / shard_name(n)))
    return jobs


def _error_row(row: dict, stage: str, kind: str, message: str) -> dict:
    return dict(video_id=row["video_id"], path=row["path"], stage=stage, kind=kind, message=message)


def extract_one(row: dict, backend: str = "pyav", strict: bool = False, keep_audio: bool = False) -> ExtractedSample:
    """Decode one manifest row into a sample (raises DecodeError or another exception on failure)."""
    from avtok.model.mel import spec01

    from .decode import decode

    clip = decode(row["path"], row["start_s"], backend=backend, strict=strict)
    mel = spec01(clip.audio)
    meta = dict(video_id=row["video_id"], key=row["key"], label=row["label"], split=row["split"],
                path=row["path"], start_s=row["start_s"], fps=round(clip.fps, 4), duration=round(clip.duration, 4),
                frames_decoded=clip.frames_decoded, audio_samples=clip.audio_samples, had_audio=clip.had_audio,
                warnings=clip.warnings, backend=backend)
    return ExtractedSample(key=row["key"], frames=clip.frames, mel=mel.astype("float16"), meta=meta,
                           audio=clip.audio if keep_audio else None)


def crash_marker_path(output: Path) -> Path:
    """`.shard-000003.inflight`: keys of videos being decoded when a previous attempt's process died."""
    return output.with_name(f".{output.name.split('.', 1)[0]}.inflight")


@dataclass
class ExtractShardStats(ShardStats):
    """One extracted shard: `videos` manifest rows = `samples` written + `errors` error rows."""

    videos: int = 0
    samples: int = 0
    errors: int = 0
    warned: int = 0  # samples with at least one decode warning
    cpu_seconds: float = 0.0  # CPU time of the worker process on this shard (decoders' children included)
    sha256: str = ""  # of the tar
    error_rows: list[dict] = field(default_factory=list)  # ERROR_COLUMNS per failed row


def process_shard(job: ShardJob, report: Callable[..., None], backend: str = "pyav", strict: bool = False,
                  keep_audio: bool = False) -> ExtractShardStats:
    """Runner task: decode every row of one shard, write its tar atomically, return stats + error rows.

    A decoder that kills the process (segfault, OOM kill) cannot be caught per video, so the key
    being decoded is kept in a small marker file beside the output. When Ray retries the shard, a
    video that was in flight at two crashes becomes an error row ("worker-crashed") instead of
    crashing every attempt and failing the whole shard (one crash may be a lost node, so the video
    gets a second chance; this needs max_retries ≥ 2). Markers only live within one run.
    """
    import torch

    from .decoded import DecodeError
    from .extracted import write_extracted_shard

    torch.set_num_threads(1)  # one core per task; the runner parallelises over shards
    cpu0 = _cpu_seconds()
    errors: list[dict] = []
    warned = 0
    marker = crash_marker_path(job.output)
    in_flight = [k for k in marker.read_text().split("\n") if k] if marker.exists() else []
    crashed = {k for k in in_flight if in_flight.count(k) >= 2}

    def samples():
        nonlocal warned
        for row in job.payload:
            if row["key"] in crashed:
                errors.append(_error_row(row, "decode", "worker-crashed",
                                         "the process decoding this video died (crash or out of memory); skipped on retry"))
                report(rows=1, errors=1)
                continue
            marker.write_text("\n".join([*in_flight, row["key"]]) + "\n")
            try:
                sample = extract_one(row, backend=backend, strict=strict, keep_audio=keep_audio)
            except DecodeError as exc:
                errors.append(_error_row(row, exc.stage, exc.kind, str(exc)))
                report(rows=1, errors=1)
                continue
            except Exception as exc:  # an unexpected decoder failure is still one video's error
                errors.append(_error_row(row, "decode", type(exc).__name__, f"{type(exc).__name__}: {exc}"))
                report(rows=1, errors=1)
                continue
            warned += bool(sample.meta["warnings"])
            report(rows=1)
            yield sample

    try:
        n = write_extracted_shard(job.output, samples())
    except Exception:  # a Python exception is not a crash: the retry starts with a clean slate
        marker.unlink(missing_ok=True)
        raise
    marker.unlink(missing_ok=True)
    return ExtractShardStats(videos=len(job.payload), samples=n, errors=len(errors), warned=warned,
                             cpu_seconds=round(_cpu_seconds() - cpu0, 3), sha256=sha256_file(job.output),
                             error_rows=errors)


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class ExtractWorker:
    """The runner's worker for extract: pays the imports and first-use costs (torch, the decoder,
    the mel basis, PIL's JPEG encoder, webdataset) once when the worker starts, not inside a shard."""

    def __init__(self, backend: str = "pyav", strict: bool = False, keep_audio: bool = False):
        import numpy as np
        import torch
        from avtok.model.geometry import N_SAMPLES
        from avtok.model.mel import spec01

        from .extracted import sample_members, write_extracted_shard  # noqa: F401  (imports webdataset)

        torch.set_num_threads(1)
        self.options = dict(backend=backend, strict=strict, keep_audio=keep_audio)
        if backend == "pyav":
            from . import decode_pyav  # noqa: F401
        mel = spec01(np.zeros(N_SAMPLES, np.float32)).astype(np.float16)
        frames = np.zeros((N_FRAMES, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
        sample_members(ExtractedSample("warm-up", frames, mel))

    def run_shard(self, job: ShardJob, report: Callable[..., None]) -> ExtractShardStats:
        return process_shard(job, report, **self.options)


@dataclass
class ExtractSummary:
    """The whole run: `videos` manifest rows = `samples` + `errors` (rows of failed shards count as errors)."""

    videos: int = 0
    samples: int = 0
    errors: int = 0
    warned: int = 0
    shards: int = 0
    shards_run: int = 0
    shards_skipped: int = 0
    shards_failed: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    ray_start_s: float = 0.0
    used_ray: bool = True
    worker_start_s: float = 0.0
    videos_run: int = 0  # manifest rows of the shards this run processed (not those finished earlier)
    out: str = ""

    def line(self) -> str:
        failed = f", {len(self.shards_failed)} shard(s) FAILED (re-run to retry)" if self.shards_failed else ""
        rate = self.videos_run / self.seconds if self.seconds > 0 else 0.0
        ray = f", Ray start {self.ray_start_s:.1f} s" if self.used_ray else ", no Ray"
        return (f"extracted {self.samples}/{self.videos} videos ({self.errors} errors, {self.warned} with warnings) "
                f"into {self.shards} shards [{self.shards_run} run, {self.shards_skipped} already done{failed}] "
                f"in {self.seconds:.1f} s ({rate:.1f} clips/s{ray}) → {self.out}")


def _plan_record(rows: list[ManifestRow], shard_size: int, backend: str, strict: bool, keep_audio: bool) -> dict:
    h = hashlib.sha256(json.dumps([[r.video_id, r.path, r.start_s, r.label, r.split] for r in rows]).encode())
    return dict(manifest_sha256=h.hexdigest(), videos=len(rows), shard_size=shard_size, backend=backend,
                strict=strict, keep_audio=keep_audio, mel_params=MEL_PARAMS)


def write_errors(path: Path, errors: list[dict]) -> None:
    """errors.parquet with ERROR_COLUMNS (written even when empty, so its absence means 'not run')."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from avtok.model.files import atomic_write_bytes

    table = pa.table({c: pa.array([e[c] for e in errors], pa.string()) for c in ERROR_COLUMNS})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(path, buf.getvalue())


OUTPUT_PATTERNS = ("shard-*.tar", "shard-*.stats.json", "plan.json", "index.json", "errors.parquet")
TEMP_PATTERNS = (".shard-*.tmp", ".shard-*.inflight", ".*.json.*.tmp", ".errors.parquet.*.tmp")


def is_extract_output(out: Path) -> bool:
    """An earlier `avtok extract` output (its plan.json), which a run into the same --out resumes."""
    try:
        return "manifest_sha256" in read_json(out / "plan.json")
    except (OSError, ValueError, TypeError):
        return False


def _check_plan(out: Path, plan: dict, overwrite: bool) -> None:
    """Write plan.json on the first run; a later run must have the same plan (or --overwrite starts over)."""
    plan_path = out / "plan.json"
    if plan_path.exists():
        old = read_json(plan_path)
        if old == json.loads(json.dumps(plan)):
            return
        if not overwrite:
            diff = [k for k in plan if old.get(k) != json.loads(json.dumps(plan[k]))]
            raise ValueError(f"{out} already holds an extraction with different {', '.join(diff)}; "
                             "use another --out, or --overwrite to replace it")
    if overwrite:
        remove_outputs(out, OUTPUT_PATTERNS)
    write_json(plan_path, plan)


def run_extract(videos: str | os.PathLike | list[ManifestRow], out: str | os.PathLike, *, shard_size: int = 1000,
                backend: str = "pyav", workers: int | None = None, address: str | None = None,
                keep_audio: bool = False, strict: bool = False, max_retries: int = 2,
                progress: Callable[[ProgressEvent], None] | None = None, in_process: bool = False,
                on_plan: Callable[[int, int], None] | None = None, overwrite: bool = False) -> ExtractSummary:
    """Extract every video of `videos` (folder, glob, manifest file or rows) into `out`; resumable.

    `on_plan(total_videos, total_shards)` is called once the shards are cut (to size a progress bar).
    `out` must be new, empty or an earlier extraction (else --overwrite); it is locked for the run.
    """
    from .decode import BACKENDS

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    t0 = time.perf_counter()
    rows = videos if isinstance(videos, list) else load_inputs(videos)
    out = Path(out)
    plan = _plan_record(rows, shard_size, backend, strict, keep_audio)
    # Temporary files of a killed run are removed under the lock: half-written tars (the shard is
    # redone) and crash markers (a killed run is not a decoder crash: every video gets fresh chances).
    with claimed(out, is_extract_output, "extract", overwrite, TEMP_PATTERNS):
        _check_plan(out, plan, overwrite)
        jobs = plan_shards(rows, out, shard_size)
        if on_plan:
            on_plan(len(rows), len(jobs))
        result: RunResult = run_shards(
            jobs, ExtractShardStats, actor_cls=ExtractWorker,
            actor_kwargs=dict(backend=backend, strict=strict, keep_audio=keep_audio),
            workers=workers, address=address, num_cpus=1, max_retries=max_retries, progress=progress,
            in_process=in_process)
        summary = _summarise(rows, jobs, result, out, used_ray=not in_process)
        summary.seconds = time.perf_counter() - t0
        write_json(out / "index.json", _index_record(plan, result.all_stats, summary))
    return summary


def _summarise(rows: list[ManifestRow], jobs: list[ShardJob], result: RunResult, out: Path,
               used_ray: bool) -> ExtractSummary:
    """Rebuild errors.parquet from every shard's stats (+ the rows of failed shards); the run's counts."""
    stats = result.all_stats
    errors = [e for s in stats for e in s.error_rows]
    failed = dict(result.failed)
    for job in jobs:
        if job.index in failed:
            errors += [_error_row(r, "shard", "shard-failed", failed[job.index]) for r in job.payload]
    write_errors(out / "errors.parquet", errors)
    return ExtractSummary(
        videos=len(rows), samples=sum(s.samples for s in stats), errors=len(errors),
        warned=sum(s.warned for s in stats), shards=len(jobs), shards_run=len(result.done),
        shards_skipped=len(result.skipped), shards_failed=result.failed, ray_start_s=result.ray_start_s,
        worker_start_s=result.worker_start_s, used_ray=used_ray,
        videos_run=sum(s.videos for s in result.done), out=str(out))


def _index_record(plan: dict, stats: list[ExtractShardStats], summary: ExtractSummary) -> dict[str, Any]:
    return dict(
        kind="avtok-extracted", avtok_version=avtok_version(), format="webdataset-tar",
        mel_params=MEL_PARAMS, mel_shape=list(MEL_SHAPE), n_frames=N_FRAMES, frame_size=FRAME_SIZE,
        backend=plan["backend"], keep_audio=plan["keep_audio"], strict=plan["strict"],
        shard_size=plan["shard_size"], manifest_sha256=plan["manifest_sha256"],
        counts=dict(videos=summary.videos, samples=summary.samples, errors=summary.errors, warned=summary.warned,
                    shards=summary.shards, shards_complete=len(stats), shards_failed=len(summary.shards_failed)),
        complete=len(stats) == summary.shards,
        shards=[dict(name=s.output, samples=s.samples, errors=s.errors, sha256=s.sha256) for s in stats],
    )
