"""Generic shard runner: numbered input shards → one output file each, on a pool of Ray actors.

Used by `avtok extract` (one CPU per worker, a plain function per shard) and `avtok tokenize`
(workers holding a model). The fan-out is Ray's `ActorPool`; this module adds what Ray does not
know about: the stats-file resume, re-running a shard whose input changed, retries of shards that
raised, and progress reports from inside the shards.

API
---
    from avtok.pipeline.runner import ShardJob, ShardStats, run_shards

    @dataclass
    class MyStats(ShardStats):   # one meaning per field; the runner fills shard/output/seconds/input_sha256
        clips: int = 0

    jobs = [ShardJob(index=n, payload=rows_n, output=out / f"tokens-{n:06d}.parquet") for n, rows_n in ...]

    # (a) a module-level function, called as fn(job, report, **fn_kwargs) -> MyStats
    result = run_shards(jobs, MyStats, fn=process_shard, fn_kwargs={"backend": "pyav"}, workers=2)

    # (b) a class; each worker builds one instance cls(*actor_args, **actor_kwargs) and the runner
    #     calls instance.run_shard(job, report) -> MyStats for every shard it gets.
    result = run_shards(jobs, MyStats, actor_cls=TokenizeWorker, actor_args=(cfg,), workers=1, num_gpus=1)

Contract of the per-shard call (`fn` or `run_shard`):
  * it writes `job.output` itself, under a temporary name then `os.replace`;
  * it catches per-row errors and records them in its stats; an exception it raises means "this
    shard failed": the runner retries it up to `max_retries` times (a worker process that dies is
    restarted by Ray and its shard retried the same way), then reports it in `RunResult.failed`;
  * it returns its stats dataclass; the runner sets `shard`, `output`, `seconds`, `input_sha256`
    and writes it to `job.stats_path` (`shard-000003.tar` → `shard-000003.stats.json`) *after* the
    call returned, i.e. after the output was renamed;
  * it may call `report(rows=k, errors=e)` as rows finish, to drive a progress bar (batched and
    sent to the driver every ~1 s: each report is a call to a queue actor, which competes with the shards for CPU).
A job whose stats file exists, reads back as `stats_cls` and records the job's `input_sha256` is
skipped (its stats are returned in `skipped`), so a re-run after a crash or Ctrl-C redoes only
unfinished shards; a finished shard made from other input is redone and listed in `stale`.

`run_shards(...)` options: `workers` (parallel actors; default as many as the CPUs of the local Ray
or the cluster allow at `num_cpus` each, never more than the shards to run), `address` (None → a private local Ray that never attaches to a `ray
start` cluster by accident; "auto" or "host:port" → that cluster, which must answer within a few
seconds), `num_cpus`/`num_gpus` per worker, `max_retries`, `progress` (callback(ProgressEvent) in
the driver), `in_process` (no Ray: the same code path in this process, for debugging and tiny jobs).

On a cluster every node needs avtok installed (the same version) and the paths in the jobs must
be visible from every node (shared filesystem).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from avtok.model.files import read_json, write_json

log = logging.getLogger(__name__)

ReportFn = Callable[..., None]
CONNECT_TIMEOUT_S = 10.0  # an unreachable --address fails after this, not after Ray's minutes of retries


class RunnerError(ValueError):
    """A run that cannot start (e.g. an unreachable cluster); the message says what to check."""


def stats_path_for(output: str | os.PathLike) -> Path:
    """`dir/shard-000003.tar` → `dir/shard-000003.stats.json` (name up to the first dot)."""
    output = Path(output)
    return output.with_name(output.name.split(".", 1)[0] + ".stats.json")


@dataclass
class ShardJob:
    """One unit of work: input `payload` (pickled to the worker) → file `output`.

    `input_sha256` names the input the output is made from (tokenize: the extracted shard's sha256);
    a finished output recorded with another one is stale and redone. Empty when not tracked."""

    index: int
    payload: Any
    output: Path
    stats_path: Path | None = None
    input_sha256: str = ""

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.stats_path = Path(self.stats_path) if self.stats_path else stats_path_for(self.output)


@dataclass
class ShardStats:
    """What the runner records for every finished shard; each command subclasses it with its counts
    (all fields with defaults). Written as `*.stats.json`."""

    shard: int = -1  # the job's index
    output: str = ""  # the output file's name
    seconds: float = 0.0  # wall time of the shard call
    input_sha256: str = ""  # the job's input_sha256 when it ran

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> ShardStats | None:
        """The stats read back, or None when `data` lacks a field (written by another version)."""
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict) or any(n not in data for n in names):
            return None
        return cls(**{n: data[n] for n in names})


@dataclass
class ProgressEvent:
    """Sent to the progress callback: `rows`/`errors` finished since the last event for that shard;
    `shard_done` is the shard's stats once it completed (or was skipped), `failed` its message."""

    shard: int
    rows: int = 0
    errors: int = 0
    shard_done: ShardStats | None = None
    skipped: bool = False
    failed: str | None = None


@dataclass
class RunResult:
    done: list[ShardStats] = field(default_factory=list)
    skipped: list[ShardStats] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)  # finished before from other input; redone now
    ray_start_s: float = 0.0  # starting (or connecting to) Ray
    worker_start_s: float = 0.0  # the slowest worker's construction (imports, model loading)
    seconds: float = 0.0

    @property
    def all_stats(self) -> list[ShardStats]:
        """Stats of every finished shard (run now or earlier), ordered by shard index."""
        return sorted(self.done + self.skipped, key=lambda s: s.shard)


@dataclass
class WorkerSpec:
    """How to build one worker: `cls(*args, **kwargs)` with a `run_shard(job, report)` method."""

    cls: type
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def build(self) -> Any:
        return self.cls(*self.args, **self.kwargs)


class FunctionWorker:
    """Worker for a plain shard function: `fn(job, report, **kwargs)`."""

    def __init__(self, fn: Callable[..., ShardStats], kwargs: dict | None = None):
        self.fn, self.kwargs = fn, kwargs or {}

    def run_shard(self, job: ShardJob, report: ReportFn) -> ShardStats:
        return self.fn(job, report, **self.kwargs)


class _Reporter:
    """Batches report() calls; `sink` receives (shard, rows, errors)."""

    def __init__(self, shard: int, sink: Callable[[int, int, int], None], every_s: float = 1.0):
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


def _call_shard(worker: Any, job: ShardJob, sink) -> tuple[ShardStats, int, int]:
    """Run one shard and write its stats file; returns (stats, rows not yet reported, errors not yet reported)."""
    reporter = _Reporter(job.index, sink)
    t0 = time.perf_counter()
    stats = worker.run_shard(job, reporter)
    if not isinstance(stats, ShardStats):
        raise TypeError(f"a shard must return ShardStats, got {type(stats).__name__}")
    stats.shard, stats.output = job.index, job.output.name
    stats.seconds, stats.input_sha256 = round(time.perf_counter() - t0, 3), job.input_sha256
    write_json(job.stats_path, stats.to_json())
    return stats, reporter.rows, reporter.errors


def _finished(job: ShardJob, stats_cls: type[ShardStats]) -> tuple[ShardStats | None, bool]:
    """(stats, stale): stats of a finished, current job; stale when it was made from other input."""
    if not (job.stats_path.exists() and job.output.exists()):
        return None, False
    try:
        stats = stats_cls.from_json(read_json(job.stats_path))
    except (OSError, ValueError):
        return None, False
    if stats is None:
        return None, False
    if stats.input_sha256 != job.input_sha256:
        return None, True
    return stats, False


def run_shards(jobs: Sequence[ShardJob], stats_cls: type[ShardStats] = ShardStats,
               fn: Callable[..., ShardStats] | None = None, *, fn_kwargs: dict | None = None,
               actor_cls: type | None = None, actor_args: tuple = (), actor_kwargs: dict | None = None,
               workers: int | None = None, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
               max_retries: int = 2, progress: Callable[[ProgressEvent], None] | None = None,
               in_process: bool = False, shutdown: bool = True) -> RunResult:
    """Run every job not finished yet with `fn` or `actor_cls`; see the module docstring."""
    if (fn is None) == (actor_cls is None):
        raise ValueError("give exactly one of fn= or actor_cls=")
    spec = (WorkerSpec(FunctionWorker, (fn, fn_kwargs or {})) if fn is not None
            else WorkerSpec(actor_cls, tuple(actor_args), dict(actor_kwargs or {})))
    emit = progress or (lambda ev: None)
    result = RunResult()
    t_start = time.perf_counter()
    todo: list[ShardJob] = []
    for job in sorted(jobs, key=lambda j: j.index):
        stats, stale = _finished(job, stats_cls)
        if stats is not None:
            result.skipped.append(stats)
            emit(ProgressEvent(job.index, shard_done=stats, skipped=True))
        else:
            todo.append(job)
            if stale:
                result.stale.append(job.index)
    if todo and in_process:
        _run_in_process(todo, spec, emit, result)
    elif todo:
        pool = RayOptions(workers=workers, address=address, num_cpus=num_cpus, num_gpus=num_gpus,
                          max_retries=max_retries, shutdown=shutdown)
        _run_ray(todo, spec, pool, emit, result)
    result.seconds = time.perf_counter() - t_start
    return result


def _record(result: RunResult, emit, job: ShardJob, outcome: tuple[ShardStats, int, int] | str) -> None:
    """Book one finished shard: its stats (and the rows it had not reported yet) or its failure message."""
    if isinstance(outcome, str):
        result.failed.append((job.index, outcome))
        emit(ProgressEvent(job.index, failed=outcome))
        return
    stats, rows, errors = outcome
    result.done.append(stats)
    emit(ProgressEvent(job.index, rows=rows, errors=errors, shard_done=stats))


def _run_in_process(todo: list[ShardJob], spec: WorkerSpec, emit, result: RunResult) -> None:
    t0 = time.perf_counter()
    worker = spec.build()
    result.worker_start_s = time.perf_counter() - t0

    def sink(shard, rows, errors):
        emit(ProgressEvent(shard, rows=rows, errors=errors))

    for job in todo:
        try:
            outcome: tuple[ShardStats, int, int] | str = _call_shard(worker, job, sink)
        except Exception as exc:  # reported like a Ray shard that exhausted its retries
            outcome = f"{type(exc).__name__}: {exc}"
            log.debug("shard %d failed:\n%s", job.index, traceback.format_exc())
        _record(result, emit, job, outcome)


# --- Ray side -------------------------------------------------------------------------------


@dataclass
class RayOptions:
    workers: int | None = None
    address: str | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    max_retries: int = 2
    shutdown: bool = True


class RayWorker:
    """The Ray actor: builds one worker, runs shards on it, and never lets a Python exception out
    (it comes back as the shard's failure message, so the driver knows which shard to retry); a
    process that dies is restarted by Ray, which then retries the shard it was running."""

    def __init__(self, spec: WorkerSpec):
        t0 = time.perf_counter()
        self.worker = spec.build()
        self.start_s = time.perf_counter() - t0

    def started(self) -> float:
        return self.start_s

    def run(self, job: ShardJob, queue) -> tuple[int, tuple[ShardStats, int, int] | str]:
        try:
            return job.index, _call_shard(self.worker, job, _queue_sink(queue))
        except Exception as exc:
            return job.index, f"{type(exc).__name__}: {exc}"


def _queue_sink(queue):
    def sink(shard: int, rows: int, errors: int) -> None:
        try:
            queue.put_nowait((shard, rows, errors))
        except Exception:  # progress is best effort; never fail a shard over it
            pass

    return sink


LOCAL_OBJECT_STORE_BYTES = 256 * 2**20


def _shm_free_bytes() -> int:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise RunnerError unless `host:port` accepts a TCP connection within `timeout_s`."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RunnerError(f"--address {address!r} is not host:port (or 'auto')")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RunnerError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); "
                          "check that `ray start --head` runs there and the port is open") from None


def init_ray(address: str | None = None, num_cpus: int | None = None) -> float:
    """Start (or connect to) Ray quietly; returns the seconds it took. No-op if already initialised."""
    import ray

    if ray.is_initialized():
        return 0.0
    t0 = time.perf_counter()
    # Workers' stdout/stderr stay in Ray's session logs: decoders chatter, and the driver shows a
    # progress bar. Shard exceptions still reach the driver as failure messages.
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
        if address != "auto":
            check_reachable(address)
        kwargs.pop("include_dashboard")  # only meaningful when starting a cluster
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise RunnerError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    return time.perf_counter() - t0


def _format_error(exc: BaseException) -> str:
    # Ray's errors wrap the remote traceback; keep the last lines, which name the real cause.
    text = str(exc) or type(exc).__name__
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-3:]) if lines else type(exc).__name__


def _run_ray(todo: list[ShardJob], spec: WorkerSpec, opts: RayOptions, emit, result: RunResult) -> None:
    import ray
    from ray.util import ActorPool
    from ray.util.queue import Queue

    local = opts.address in (None, "", "local")
    started_here = not ray.is_initialized()
    # A local Ray gets exactly the CPUs asked for, so `workers` is also the parallelism limit.
    local_cpus = max(int(opts.workers * max(opts.num_cpus, 1)), 1) if local and opts.workers else None
    result.ray_start_s = init_ray(opts.address, local_cpus)
    try:
        workers = opts.workers or max(int(ray.cluster_resources().get("CPU", 1) // max(opts.num_cpus, 1)), 1)
        queue = Queue(actor_options={"num_cpus": 0})
        actor = ray.remote(RayWorker).options(
            num_cpus=opts.num_cpus, num_gpus=opts.num_gpus,
            max_restarts=len(todo) * (opts.max_retries + 1), max_task_retries=opts.max_retries)
        actors = [actor.remote(spec) for _ in range(min(workers, len(todo)))]
        _drive(ActorPool(actors), todo, queue, opts.max_retries, emit, result)
        try:
            result.worker_start_s = max(ray.get([a.started.remote() for a in actors], timeout=30))
        except Exception:  # a worker that died for good has no start time; this figure is informative
            pass
    finally:
        if opts.shutdown and started_here:
            ray.shutdown()


def _drive(pool, todo: list[ShardJob], queue, max_retries: int, emit, result: RunResult) -> None:
    """Feed every job through the actor pool; retry a shard that raised up to max_retries times."""
    by_index = {job.index: job for job in todo}
    refs: dict[int, Any] = {}  # job index -> its latest call, to name a shard whose worker kept dying
    tries = dict.fromkeys(by_index, 0)

    def call(actor, job: ShardJob):
        refs[job.index] = actor.run.remote(job, queue)
        return refs[job.index]

    def submit(job: ShardJob) -> None:
        tries[job.index] += 1
        pool.submit(call, job)

    def drain_queue() -> None:
        try:
            items = queue.get_nowait_batch(queue.qsize())
        except Exception:
            return
        for shard, rows, errors in items:
            emit(ProgressEvent(shard, rows=rows, errors=errors))

    for job in todo:
        submit(job)
    while pool.has_next():
        try:
            index, outcome = pool.get_next_unordered(timeout=1.0)
        except TimeoutError:
            drain_queue()
            continue
        except Exception:  # the worker of some shard died more often than Ray retries: find which
            index, outcome = _dead_call(refs)
            tries[index] = max_retries + 1  # Ray already retried it max_retries times
        drain_queue()
        refs.pop(index, None)
        if isinstance(outcome, str) and tries[index] <= max_retries:
            log.info("shard %d failed (try %d), retrying: %s", index, tries[index], outcome)
            submit(by_index[index])
            continue
        _record(result, emit, by_index[index], outcome)
    drain_queue()


def _dead_call(refs: dict[int, Any]) -> tuple[int, str]:
    """(job index, message) of a finished call that raised (its worker died too often)."""
    import ray

    for index, ref in sorted(refs.items()):
        if ray.wait([ref], timeout=0)[0]:
            try:
                ray.get(ref)
            except Exception as exc:
                return index, _format_error(exc)
    raise RuntimeError("a shard call failed, but none of the calls in flight did")
