"""Benchmark of `avtok extract` against the decode floor, on clips made here with ffmpeg.

    python bench/extract.py [--reps 3] [--clips 200] [--dir /tmp/avtok-bench] [--skip-workers] [--skip-backends]

Prints, for four kinds of clip (360p with one keyframe, 360p with a keyframe every 2 s, high-detail
360p mandelbrot, 1080p): the floor `ffmpeg -threads 1 -i F -f null -` (wall ms, median of --reps),
then each backend's per-clip cost (decode + mel, one thread, in process) as ms and as a ratio to
that floor. Then the whole `extract` (Ray, JPEG encoding, tar writing included) with 1 and 2
workers over --clips 360p clips: Ray start-up and worker warm-up reported apart, per-clip wall and
CPU time inside the tasks vs the floor, the steady-state 2-vs-1-worker speed-up, and a control
without Ray in the same run (the same shards through the same worker in a multiprocessing pool,
each run right after the extract run with as many workers). CPU times hold on a shared machine; wall times and
speed-ups do not (the load average is printed at the start and the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from avtok.model.mel import spec01
from avtok.pipeline.decode import decode
from avtok.pipeline.extract import run_extract
from avtok.pipeline.ffmpeg import ffmpeg_exe
from media import make_clip

KINDS = {
    "360p 1 keyframe": dict(size=(640, 360), fps=25),
    "360p key/2s": dict(size=(640, 360), fps=25, gop=50, faststart=True),
    "360p mandelbrot": dict(size=(640, 360), fps=30, source="mandelbrot", audio="noise", channels=2),
    "1080p": dict(size=(1920, 1080), fps=30),
}
BACKENDS = ("pyav", "decord", "ffmpeg")


def measure(fn, reps: int) -> tuple[float, float]:
    """(wall ms, CPU ms) medians over reps; CPU counts this process and its waited-for children (ffmpeg),
    which is robust to other jobs sharing the cores, unlike wall time."""
    walls, cpus = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), os.times()
        fn()
        c2 = os.times()
        walls.append(time.perf_counter() - t)
        cpus.append(sum(c2[:4]) - sum(c[:4]))
    return 1000 * statistics.median(walls), 1000 * statistics.median(cpus)


def floor_ms(path: Path, reps: int) -> tuple[float, float]:
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-threads", "1", "-i", str(path), "-f", "null", "-"]
    return measure(lambda: subprocess.run(cmd, check=True), reps)


def backend_ms(path: Path, backend: str, reps: int) -> tuple[float, float]:
    return measure(lambda: spec01(decode(path, 0.0, backend=backend).audio), reps)


_WORKER = None


def _warm(backend: str) -> None:
    global _WORKER
    from avtok.pipeline.extract import ExtractWorker

    _WORKER = ExtractWorker(backend)


def _control_shard(job) -> int:
    return _WORKER.run_shard(job, lambda **_: None).videos


def control_rate(vids: Path, out: Path, clips: int, procs: int) -> float:
    """Control without Ray: the same shards through the same ExtractWorker in a plain multiprocessing
    pool (warm-up excluded: the pool's initializer builds the worker before the clock starts)."""
    import multiprocessing as mp

    from avtok.pipeline.extract import plan_shards
    from avtok.pipeline.manifest import load_inputs

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    jobs = plan_shards(load_inputs(vids), out, max(clips // 20, 1))
    with mp.get_context("spawn").Pool(procs, initializer=_warm, initargs=("pyav",)) as pool:
        pool.map(_noop, range(procs), chunksize=1)  # returns once every process has warmed up
        t = time.perf_counter()
        done = sum(pool.imap_unordered(_control_shard, jobs, chunksize=1))
        return done / (time.perf_counter() - t)


def _noop(_: int) -> None:
    time.sleep(0.5)  # so that each process of the pool takes one


def steady_rate(events: list[tuple[float, int]], total: int) -> float:
    """clips/s between 10 % and 90 % of the clips done: worker start-up and the last shard's tail excluded."""
    done, marks = 0, []
    for t, n in events:
        done += n
        marks.append((t, done))
    lo = next(((t, d) for t, d in marks if d >= 0.1 * total), None)
    hi = next(((t, d) for t, d in marks if d >= 0.9 * total), None)
    if lo is None or hi is None or hi[0] <= lo[0]:
        return float("nan")
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


def whole_extract(vids: Path, out: Path, clips: int, workers: int, floor_wall: float, floor_cpu: float) -> float:
    """Run the whole extract once; print its row; return its steady-state clips/s."""
    from avtok.pipeline.extract import ExtractShardStats

    shutil.rmtree(out, ignore_errors=True)
    events: list[tuple[float, int]] = []

    def on_progress(ev) -> None:
        if ev.rows:
            events.append((time.perf_counter(), ev.rows))

    t = time.perf_counter()
    s = run_extract(vids, out, shard_size=max(clips // 20, 1), workers=workers, progress=on_progress)
    wall = time.perf_counter() - t
    stats = [ExtractShardStats.from_json(json.loads(p.read_text())) for p in sorted(out.glob("shard-*.stats.json"))]
    in_task = 1000 * sum(st.seconds for st in stats) / clips
    cpu = 1000 * sum(st.cpu_seconds for st in stats) / clips
    rate = steady_rate(events, clips)
    print(f"{workers:>7d} {wall:7.1f} {s.ray_start_s:8.1f} {s.worker_start_s:8.1f} {in_task:8.0f} "
          f"{in_task / floor_wall:5.2f}x {cpu:8.0f} {cpu / floor_cpu:5.2f}x {rate:8.2f}", end="", flush=True)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clips", type=int, default=200, help="360p clips for the whole-extract runs")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one, removed at the end)")
    ap.add_argument("--skip-workers", action="store_true", help="skip the whole-extract runs")
    ap.add_argument("--skip-backends", action="store_true", help="skip the per-backend table")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(args.dir or tempfile.mkdtemp(prefix="avtok-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start")
    try:
        kinds = {"360p 1 keyframe": KINDS["360p 1 keyframe"]} if args.skip_backends else KINDS
        files = {k: make_clip(work / f"kind{i}.mp4", **kw) for i, (k, kw) in enumerate(kinds.items())}
        if not args.skip_backends:
            backend_table(files, args.reps)
        if args.skip_workers:
            return
        vids = work / "videos"
        vids.mkdir(exist_ok=True)
        src = files["360p 1 keyframe"]
        for i in range(args.clips):
            shutil.copy(src, vids / f"v{i:03d}.mp4")
        spec01(decode(src).audio)  # warm this process (page cache, mel basis)
        fl, fl_cpu = floor_ms(src, args.reps)
        print(f"\nwhole extract, {args.clips} x 360p (1 keyframe) clips; floor {fl:.0f} ms/clip wall, "
              f"{fl_cpu:.0f} ms CPU. Times inside the tasks per clip (decode, mel, JPEG, tar, stats) vs the floor;")
        print("Ray start-up and worker warm-up (imports, first use) apart; steady = clips/s between 10 % and 90 % done")
        print(f"{'workers':>7s} {'wall s':>7s} {'ray s':>8s} {'warm s':>8s} {'task ms':>8s} {'':>6s} "
              f"{'cpu ms':>8s} {'':>6s} {'steady':>8s} {'control':>8s}")
        steady, control = {}, {}
        for w in (1, 2):  # each extract run next to its control, so both see about the same load
            steady[w] = whole_extract(vids, work / f"out{w}", args.clips, w, fl, fl_cpu)
            control[w] = control_rate(vids, work / f"control{w}", args.clips, w)
            print(f" {control[w]:8.2f}")
        print(f"speed-up 2 workers vs 1 in steady state: {steady[2] / steady[1]:.2f}x; the control without Ray "
              f"(the same shards through ExtractWorker in a multiprocessing pool): {control[2] / control[1]:.2f}x")
        print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


def backend_table(files: dict[str, Path], reps: int) -> None:
    """Per-clip decode + mel of every backend on every kind of clip, against the ffmpeg floor."""
    for f in files.values():  # warm imports, page cache and the mel basis
        spec01(decode(f).audio)
        decode(f, backend="decord")
    print(f"per-clip cost (decode + mel, 1 thread), median of {reps}: CPU ms / wall ms, and the CPU ratio "
          "to the floor `ffmpeg -threads 1 -i F -f null -` (wall ratio in brackets)")
    print(f"{'clip':16s} {'floor cpu/wall':>15s} " + " ".join(f"{b:>26s}" for b in BACKENDS))
    for kind, f in files.items():
        fw, fc = floor_ms(f, reps)
        cells = []
        for b in BACKENDS:
            w, c = backend_ms(f, b, reps)
            cells.append(f"{c:5.0f}/{w:5.0f} {c / fc:4.2f}x ({w / fw:4.2f}x)")
        print(f"{kind:16s} {fc:6.0f} /{fw:6.0f} " + " ".join(f"{c:>26s}" for c in cells))


if __name__ == "__main__":
    main()
