"""Benchmark of `avtok extract` against the decode floor, on clips made here with ffmpeg.

    python bench/extract.py [--reps 3] [--clips 16] [--dir /tmp/avtok-bench] [--skip-workers]

Prints, for four kinds of clip (360p with one keyframe, 360p with a keyframe every 2 s, high-detail
360p mandelbrot, 1080p): the floor `ffmpeg -threads 1 -i F -f null -` (wall ms, median of --reps),
then each backend's per-clip cost (decode + mel, one thread, in process) as ms and as a ratio to
that floor. Then the whole `extract` (Ray, JPEG encoding, tar writing included) with 1 and 2
workers over --clips 360p clips: Ray start-up reported apart, per-clip cost vs the floor, and the
2-vs-1-worker speed-up. All ratios come from one run on one machine; a shared machine is noisy.
"""

from __future__ import annotations

import argparse
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


def _pool_work(args: tuple[str, int]) -> float:
    import torch

    torch.set_num_threads(1)
    path, n = args
    spec01(decode(path).audio)  # warm-up
    t = time.perf_counter()
    for _ in range(n):
        spec01(decode(path).audio)
    return time.perf_counter() - t


def pool_speedup(path: Path, n: int) -> tuple[float, float]:
    """Control without Ray: clips/s of 1 and 2 plain processes doing the same decode + mel."""
    import multiprocessing as mp

    rates = []
    for procs in (1, 2):
        with mp.get_context("spawn").Pool(procs) as pool:
            times = pool.map(_pool_work, [(str(path), n)] * procs)
        rates.append(n * procs / max(times))
    return rates[0], rates[1]


def read_stats(out: Path) -> list[dict]:
    import json

    return [json.loads(p.read_text()) for p in sorted(out.glob("shard-*.stats.json"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clips", type=int, default=16, help="360p clips for the whole-extract runs")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one, removed at the end)")
    ap.add_argument("--skip-workers", action="store_true", help="skip the whole-extract runs")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(args.dir or tempfile.mkdtemp(prefix="avtok-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        files = {k: make_clip(work / f"kind{i}.mp4", **kw) for i, (k, kw) in enumerate(KINDS.items())}
        for f in files.values():  # warm imports, page cache and the mel basis
            spec01(decode(f).audio)
            decode(f, backend="decord")
        print(f"per-clip cost (decode + mel, 1 thread), median of {args.reps}: CPU ms / wall ms, and the CPU ratio "
              "to the floor `ffmpeg -threads 1 -i F -f null -` (wall ratio in brackets)")
        print(f"{'clip':16s} {'floor cpu/wall':>15s} " + " ".join(f"{b:>26s}" for b in BACKENDS))
        for kind, f in files.items():
            fw, fc = floor_ms(f, args.reps)
            cells = []
            for b in BACKENDS:
                w, c = backend_ms(f, b, args.reps)
                cells.append(f"{c:5.0f}/{w:5.0f} {c / fc:4.2f}x ({w / fw:4.2f}x)")
            print(f"{kind:16s} {fc:6.0f} /{fw:6.0f} " + " ".join(f"{c:>26s}" for c in cells))
        if args.skip_workers:
            return
        vids = work / "videos"
        vids.mkdir(exist_ok=True)
        src = files["360p 1 keyframe"]
        for i in range(args.clips):
            shutil.copy(src, vids / f"v{i:03d}.mp4")
        fl, fl_cpu = floor_ms(src, args.reps)
        print(f"\nwhole extract (wall), {args.clips} x 360p (1 keyframe) clips, floor {fl:.0f} ms/clip wall "
              f"({fl_cpu:.0f} ms CPU)")
        per_clip, steady = {}, {}
        for workers in (1, 2):
            out = work / f"out{workers}"
            shutil.rmtree(out, ignore_errors=True)
            events: list[tuple[float, int]] = []

            def on_progress(ev, events=events) -> None:
                if ev.rows:
                    events.append((time.perf_counter(), ev.rows))

            t = time.perf_counter()
            s = run_extract(vids, out, shard_size=max(args.clips // 8, 1), workers=workers, progress=on_progress)
            wall = time.perf_counter() - t
            work_s = wall - s.ray_start_s
            per_clip[workers] = work_s / args.clips
            in_task = sum(st["seconds"] for st in read_stats(out)) / args.clips
            # steady state: clips finished after the first report, over the time since it (worker start-up excluded)
            rows_after = sum(n for _, n in events[1:])
            steady[workers] = rows_after / (events[-1][0] - events[0][0]) if len(events) > 1 else float("nan")
            print(f"workers={workers}: wall {wall:5.1f} s = Ray start {s.ray_start_s:4.1f} s + {work_s:5.1f} s "
                  f"→ {1000 * per_clip[workers]:5.0f} ms/clip ({1000 * per_clip[workers] / fl:4.2f}x floor); "
                  f"inside tasks {1000 * in_task:4.0f} ms/clip ({1000 * in_task / fl:4.2f}x floor); "
                  f"steady {steady[workers]:4.2f} clips/s")
        print(f"speed-up 2 workers vs 1: {per_clip[1] / per_clip[2]:.2f}x end to end (Ray start excluded), "
              f"{steady[2] / steady[1]:.2f}x steady state")
        r1, r2 = pool_speedup(src, max(args.clips // 2, 2))
        print(f"control without Ray (multiprocessing, same decode + mel): 1 process {r1:.2f} clips/s, "
              f"2 processes {r2:.2f} clips/s → {r2 / r1:.2f}x (what this machine allows right now)")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
