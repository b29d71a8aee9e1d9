"""Generic shard runner: numbered input shards → one output file each, on Ray (local or a cluster).

Used by `avtok extract` (stateless tasks, one CPU each) and `avtok tokenize` (actors holding a model).

API
---
    from avtok.pipeline.runner import ShardJob, run_shards, stats_path_for

    jobs = [ShardJob(index=n, payload=rows_n, output=out / f"tokens-{n:06d}.parquet") for n, rows_n in ...]

    # (a) stateless: a module-level function, called as fn(job, report, **fn_kwargs) -> dict
    result = run_shards(jobs, fn=process_shard, fn_kwargs={"backend": "pyav"}, workers=2)

    # (b) stateful: a class; each worker builds one instance cls(*actor_args, **actor_kwargs)
    #     and the runner calls instance.run_shard(job, report) -> dict for every shard it gets.
    result = run_shards(jobs, actor_cls=TokenizeWorker, actor_args=(cfg,), workers=1, num_gpus=1)

Contract of the per-shard call (`fn` or `run_shard`):
  * it writes `job.output` itself, under a temporary name then `os.replace` (see `pipeline.index`);
  * it catches per-row errors and records them in what it returns; an exception it raises means
    "this shard failed" (Ray retries it up to `max_retries` times, then it is reported in
    `RunResult.failed`, never silently dropped);
  * it returns a JSON-able stats dict; the runner adds `shard`, `output`, `seconds` and writes it
    to `job.stats_path` (default `stats_path_for(job.output)`: `shard-000003.tar` →
    `shard-000003.stats.json`) *after* the call returned, i.e. after the output was renamed;
  * it may call `report(rows=k, errors=e)` as rows finish, to drive a progress bar (cheap;
    batched and sent to the driver every ~0.3 s).
A job whose stats file already exists is skipped (its stats are read back and returned), so a
re-run after a crash or Ctrl-C redoes only unfinished shards.

`run_shards(...)` arguments:
  workers      parallel tasks/actors (default: all CPUs of a local Ray, 1 actor for actor mode);
  address      None → start a private local Ray (`ray.init(address="local")`, never attaches to a
               `ray start` cluster by accident); "auto" or "host:port" → connect to that cluster;
  num_cpus / num_gpus   resources per task or actor (defaults 1 / 0);
  max_retries  Ray retries per shard (worker crash or raised exception);
  progress     callback(ProgressEvent) in the driver: per-row increments and shard completions;
  in_process   run everything in this process without Ray (debugging, tiny jobs; same code path
               for the shard function, stats and skipping).
Returns `RunResult(done=[stats...], skipped=[stats...], failed=[(index, message)...], ray_start_s)`.

On a cluster every node needs avtok installed (the same version) and the paths in the jobs must
be visible from every node (shared filesystem).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avtok.model.files import read_json, write_json

log = logging.getLogger(__name__)

ReportFn = Callable[..., None]


def stats_path_for(output: str | os.PathLike) -> Path:
    """`dir/shard-000003.tar` → `dir/shard-000003.stats.json` (name up to the first dot)."""
    output = Path(output)
    return output.with_name(output.name.split(".", 1)[0] + ".stats.json")


@dataclass
class ShardJob:
    """One unit of work: input `payload` (pickled to the worker) → file `output`."""

    index: int
    payload: Any
    output: Path
    stats_path: Path | None = None

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.stats_path = Path(self.stats_path) if self.stats_path else stats_path_for(self.output)


@dataclass
class ProgressEvent:
    """Sent to the progress callback: `rows`/`errors` finished since the last event for that shard;
    `shard_done` is the shard's stats once it completed (or was skipped), `failed` its message."""

    shard: int
    rows: int = 0
    errors: int = 0
    shard_done: dict | None = None
    skipped: bool = False
    failed: str | None = None


@dataclass
class RunResult:
    done: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    ray_start_s: float = 0.0
    seconds: float = 0.0

    @property
    def all_stats(self) -> list[dict]:
        """Stats of every finished shard (run now or earlier), ordered by shard index."""
        return sorted(self.done + self.skipped, key=lambda s: s["shard"])


def _finish(job: ShardJob, stats: dict, seconds: float) -> dict:
    stats = dict(stats)
    stats.update(shard=job.index, output=job.output.name, seconds=round(seconds, 3))
    write_json(job.stats_path, stats)
    return stats


class _Reporter:
    """Batches report() calls; `sink` receives (shard, rows, errors)."""

    def __init__(self, shard: int, sink: Callable[[int, int, int], None], every_s: float = 0.3):
        self.shard, self.sink, self.every_s = shard, sink, every_s
        self.rows = self.errors = 0
        self.last = time.monotonic()

    def __call__(self, rows: int = 0, errors: int = 0) -> None:
        self.rows += rows
        self.errors += errors
        if time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.rows or self.errors:
            self.sink(self.shard, self.rows, self.errors)
            self.rows = self.errors = 0
        self.last = time.monotonic()


def _call_shard(call: Callable[[ShardJob, ReportFn], dict], job: ShardJob, sink) -> tuple[dict, int, int]:
    """Run one shard; returns (stats, rows not yet reported, errors not yet reported)."""
    reporter = _Reporter(job.index, sink)
    t0 = time.perf_counter()
    stats = call(job, reporter)
    if not isinstance(stats, dict):
        raise TypeError(f"shard function must return a dict of stats, got {type(stats).__name__}")
    out = _finish(job, stats, time.perf_counter() - t0)
    return out, reporter.rows, reporter.errors


# --- Ray side -------------------------------------------------------------------------------


def _queue_sink(queue):
    def sink(shard: int, rows: int, errors: int) -> None:
        try:
            queue.put_nowait((shard, rows, errors))
        except Exception:  # progress is best effort; never fail a shard over it
            pass

    return sink


def _remote_task(fn, fn_kwargs, job, queue):
    return _call_shard(lambda j, r: fn(j, r, **fn_kwargs), job, _queue_sink(queue))


class _ActorWrapper:
    def __init__(self, cls, args, kwargs):
        self.inner = cls(*args, **kwargs)

    def run(self, job, queue):
        return _call_shard(self.inner.run_shard, job, _queue_sink(queue))


LOCAL_OBJECT_STORE_BYTES = 256 * 2**20


def _shm_free_bytes() -> int:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def init_ray(address: str | None = None, num_cpus: int | None = None) -> float:
    """Start (or connect to) Ray quietly; returns the seconds it took. No-op if already initialised."""
    import ray

    if ray.is_initialized():
        return 0.0
    t0 = time.perf_counter()
    # Workers' stdout/stderr stay in Ray's session logs: decoders chatter, and the driver shows a
    # progress bar. Shard exceptions still reach the driver through ray.get.
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING,
                                  log_to_driver=False, configure_logging=True)
    if address in (None, "", "local"):
        # A private single-machine cluster: token auth only adds a log line here.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # Shards pass paths and small stats, not tensors: a small object store starts faster and
        # fits Docker's 64 MB /dev/shm (Ray then falls back to /tmp, which it refuses unless allowed).
        store = LOCAL_OBJECT_STORE_BYTES
        if _shm_free_bytes() < store:
            os.environ.setdefault("RAY_OBJECT_STORE_ALLOW_SLOW_STORAGE", "1")
        kwargs.update(address="local", num_cpus=num_cpus, object_store_memory=store)
    else:
        kwargs.pop("include_dashboard")  # only meaningful when starting a cluster
        kwargs["address"] = address
    ray.init(**kwargs)
    return time.perf_counter() - t0


def _format_error(exc: BaseException) -> str:
    # RayTaskError wraps the remote traceback; keep the last lines, which name the real cause.
    text = str(exc) or type(exc).__name__
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-3:]) if lines else type(exc).__name__


def run_shards(
    jobs: Sequence[ShardJob],
    fn: Callable[..., dict] | None = None,
    *,
    fn_kwargs: dict | None = None,
    actor_cls: type | None = None,
    actor_args: tuple = (),
    actor_kwargs: dict | None = None,
    workers: int | None = None,
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_retries: int = 2,
    progress: Callable[[ProgressEvent], None] | None = None,
    in_process: bool = False,
    shutdown: bool = True,
) -> RunResult:
    """Run every job not finished yet (no stats file) with `fn` or `actor_cls`; see module docstring."""
    if (fn is None) == (actor_cls is None):
        raise ValueError("give exactly one of fn= or actor_cls=")
    fn_kwargs = fn_kwargs or {}
    actor_kwargs = actor_kwargs or {}
    emit = progress or (lambda ev: None)
    result = RunResult()
    t_start = time.perf_counter()

    todo: list[ShardJob] = []
    for job in sorted(jobs, key=lambda j: j.index):
        if job.stats_path.exists() and job.output.exists():
            stats = read_json(job.stats_path)
            result.skipped.append(stats)
            emit(ProgressEvent(job.index, shard_done=stats, skipped=True))
        else:
            todo.append(job)
    if not todo:
        result.seconds = time.perf_counter() - t_start
        return result

    if in_process:
        _run_in_process(todo, fn, fn_kwargs, actor_cls, actor_args, actor_kwargs, emit, result)
    else:
        _run_ray(todo, fn, fn_kwargs, actor_cls, actor_args, actor_kwargs, workers, address,
                 num_cpus, num_gpus, max_retries, emit, result, shutdown)
    result.seconds = time.perf_counter() - t_start
    return result


def _run_in_process(todo, fn, fn_kwargs, actor_cls, actor_args, actor_kwargs, emit, result) -> None:
    if actor_cls is not None:
        inner = actor_cls(*actor_args, **actor_kwargs)
        call = inner.run_shard
    else:
        def call(j, r):
            return fn(j, r, **fn_kwargs)

    def sink(shard, rows, errors):
        emit(ProgressEvent(shard, rows=rows, errors=errors))

    for job in todo:
        try:
            stats, rows, errors = _call_shard(call, job, sink)
        except Exception as exc:  # reported like a Ray shard that exhausted its retries
            msg = f"{type(exc).__name__}: {exc}"
            log.debug("shard %d failed:\n%s", job.index, traceback.format_exc())
            result.failed.append((job.index, msg))
            emit(ProgressEvent(job.index, failed=msg))
            continue
        result.done.append(stats)
        emit(ProgressEvent(job.index, rows=rows, errors=errors, shard_done=stats))


def _run_ray(todo, fn, fn_kwargs, actor_cls, actor_args, actor_kwargs, workers, address,
             num_cpus, num_gpus, max_retries, emit, result, shutdown) -> None:
    import ray
    from ray.util.queue import Queue

    local = address in (None, "", "local")
    started_here = not ray.is_initialized()
    # A local Ray gets exactly the CPUs asked for, so `workers` is also the parallelism limit.
    local_cpus = None
    if local and workers:
        local_cpus = max(int(workers * max(num_cpus, 1)), 1)
    result.ray_start_s = init_ray(address, local_cpus)
    try:
        queue = Queue(actor_options={"num_cpus": 0})
        if workers is None:
            workers = 1 if actor_cls is not None else max(int(ray.cluster_resources().get("CPU", 1) // max(num_cpus, 1)), 1)
        pending: dict[Any, tuple[ShardJob, Any]] = {}  # ref -> (job, actor or None)
        queue_jobs = list(todo)

        if actor_cls is not None:
            remote_cls = ray.remote(_ActorWrapper).options(
                num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_retries, max_task_retries=max_retries)
            idle = [remote_cls.remote(actor_cls, actor_args, actor_kwargs) for _ in range(workers)]

            def submit(job, actor):
                return actor.run.remote(job, queue)
        else:
            remote_fn = ray.remote(_remote_task).options(
                num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries, retry_exceptions=True)
            idle = [None] * workers
            fn_ref = ray.put(fn_kwargs)

            def submit(job, actor):
                return remote_fn.remote(fn, fn_ref, job, queue)

        def drain_queue() -> None:
            try:
                items = queue.get_nowait_batch(queue.qsize())
            except Exception:
                return
            for shard, rows, errors in items:
                emit(ProgressEvent(shard, rows=rows, errors=errors))

        while queue_jobs or pending:
            while queue_jobs and idle:
                job, actor = queue_jobs.pop(0), idle.pop()
                pending[submit(job, actor)] = (job, actor)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.3)
            drain_queue()
            for ref in ready:
                job, actor = pending.pop(ref)
                idle.append(actor)
                try:
                    stats, rows, errors = ray.get(ref)
                except Exception as exc:  # retries exhausted (crash or raised exception)
                    msg = _format_error(exc)
                    result.failed.append((job.index, msg))
                    emit(ProgressEvent(job.index, failed=msg))
                    continue
                result.done.append(stats)
                emit(ProgressEvent(job.index, rows=rows, errors=errors, shard_done=stats))
        drain_queue()
    finally:
        if shutdown and started_here:
            ray.shutdown()
