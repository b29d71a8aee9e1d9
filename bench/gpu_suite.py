"""Every GPU figure of issue 13 in one command: tokenize, train, sample, DDP; one table and one JSON file.

    python bench/gpu_suite.py --out gpu_suite.json        # one H100/H200: about 7.5 minutes
    python bench/gpu_suite.py --tiny --out tiny.json      # CPU smoke test (CI): the same code paths, tiny sizes

Parts run one after another, each in its own forked process (its own CUDA context and memory peak) with
a time budget: a part stops repeating once its soft deadline passes and reports what it measured as
"budget exhausted"; a part still running at its budget is killed with its process group, and its rows
say so. A part's budget is its own share plus whatever earlier parts left unspent, never what later
parts are owed, so a slow part cannot starve the rest. The measuring code is the single benches'
(bench/tokenizing.py, bench/train.py, bench/sample.py); this file only sizes, budgets and reports.
Exit status 1 if any part raised (a broken code path); missed targets and exhausted budgets are
figures, not failures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
try:
    import avtok.model  # noqa: F401
except ImportError:  # a bare copy of the repository (the device machine): map avtok.* onto its folders
    import types

    for _name in [m for m in sys.modules if m == "avtok" or m.startswith("avtok.")]:
        del sys.modules[_name]  # e.g. an empty namespace package found on the path
    _pkg = types.ModuleType("avtok")
    _pkg.__path__ = [str(ROOT)]  # avtok.model -> model/, avtok.pipeline -> pipeline/, as pyproject maps them
    sys.modules["avtok"] = _pkg

# The parent forks its parts, so it must never initialise CUDA (a forked child could not use it):
# torch.cuda.is_available() then asks NVML instead of running cuInit.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from common import Deadline, cpu_matmul_peak, device_name, gpu_matmul_peak, peak_flops_for  # noqa: E402
from sample import measure_sample  # noqa: E402
from tokenizing import clip_inputs, measure_tokenize, random_tokenizer  # noqa: E402
from train import measure_train  # noqa: E402


@dataclass(frozen=True)
class Row:
    """One figure of the table: `op`/`threshold` make the target (None: reported, no target)."""

    id: str
    what: str
    unit: str
    op: str | None = None  # ">=" or "<"
    threshold: float | None = None

    @property
    def target(self) -> str:
        return "-" if self.op is None else f"{self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Part:
    name: str
    share_s: float  # seconds on one H100-class GPU
    tiny_share_s: float  # seconds in --tiny on 2 CPU cores
    rows: tuple[Row, ...]
    run: Callable[[Ctx], None]


@dataclass
class Ctx:
    """What a part's process gets: device, sizes, its soft deadline, and where to report."""

    device: torch.device
    tiny: bool
    deadline: Deadline
    rows_path: str
    sizes: dict[str, Any] = field(default_factory=dict)
    gpus: int = 0  # visible GPUs, counted by the parent's probe (a part must not touch CUDA before forking)

    def _write(self, record: dict) -> None:
        with open(self.rows_path, "a") as f:  # one line per record, flushed: survives a kill
            f.write(json.dumps(record) + "\n")

    def emit(self, row_id: str, value: float | None, details: dict, note: str = "", complete: bool = True) -> None:
        """Report (or update: the last report wins) a row's figure."""
        self._write({"row": row_id, "value": value, "details": details, "note": note, "complete": complete})

    def progress(self, text: str) -> None:
        """Where the part is now (named in the row if the part is killed there)."""
        self._write({"progress": text})


# -- sizes -------------------------------------------------------------------------------------------------
FULL = {"tokenize": dict(clips=64, frames_per_clip=10, small=False, batch_size=64, reps=3),
        "half": "bf16",
        "train": dict(preset_name="large", batch=128, steps=10, warmup=3),
        "fp16": dict(preset_name="large", batch=24, steps=8, warmup=2),
        "compile": dict(warmup=3, backend="inductor"),
        "sample": dict(name="large", precision="bf16", batch=64, steps=30, cfg=3.0, repeat=2)}
# --tiny: the tiny preset, narrow VQGANs on small inputs with 2 frames per clip, 1-2 repetitions,
# torch.compile's aot_eager backend (the same Dynamo/AOTAutograd capture without C++ code generation,
# which alone takes minutes on 2 cores), and fp32 where the GPU runs bf16: CPU bf16 matmuls ran 5x
# slower than fp32 here (autocast and the GradScaler still run, in the fp16 rows).
TINY = {"tokenize": dict(clips=1, frames_per_clip=2, small=True, batch_size=11, reps=2),
        "half": "fp32",
        "train": dict(preset_name="tiny", batch=2, steps=2, warmup=1),
        "fp16": dict(preset_name="tiny", batch=2, steps=1, warmup=1),
        "compile": dict(warmup=1, backend="aot_eager"),
        "sample": dict(name="tiny", precision="fp32", batch=2, steps=6, cfg=3.0, repeat=1)}
MEM_LIMIT_GIB = 15.0  # fp16 on a 16 GB V100, leaving room for the CUDA context


# -- parts (run in the child process) ------------------------------------------------------------------------
def part_device(ctx: Ctx) -> None:
    dev = ctx.device
    cuda = dev.type == "cuda"
    info = {"device": device_name(dev), "torch": torch.__version__, "gpus": torch.cuda.device_count() if cuda else 0,
            "capability": list(torch.cuda.get_device_capability(dev)) if cuda else None,
            "kind": "bf16 8192^3" if cuda else "fp32 1024^3"}
    measured = (gpu_matmul_peak(dev) if cuda else cpu_matmul_peak()) / 1e12
    datasheet = peak_flops_for(dev) if cuda else None
    info["datasheet_tflops"] = datasheet / 1e12 if datasheet else None
    note = f"{info['device']}, torch {torch.__version__}, {info['kind']} matmul on random data"
    if datasheet:
        note += f"; {measured / info['datasheet_tflops']:.0%} of the datasheet {info['datasheet_tflops']:g} (MFU base)"
    ctx.emit("device.matmul", measured, info, note)


def part_tokenize(ctx: Ctx) -> None:
    s = ctx.sizes["tokenize"]
    img = random_tokenizer("taming", ctx.device, 0, s["small"])
    aud = random_tokenizer("specvqgan", ctx.device, 1, s["small"])
    frames, mels = clip_inputs(s["clips"], ctx.device, s["small"], s["frames_per_clip"])
    what = f"{s['clips']} clips x ({s['frames_per_clip']} frames {tuple(frames.shape[2:])} + mel {tuple(mels.shape[2:])})"

    def report(r: dict) -> None:
        done = r["reps"] >= s["reps"]
        tail = f"{r['reps']}/{s['reps']} reps, {what}" + ("" if done else "; budget exhausted")
        rate, det = r["clips_per_s"], {**r, "sizes": s}
        ctx.emit("tokenize.baseline", rate["naive"], det, f"batch = 1 clip, fp32, default cuDNN; {tail}", done)
        ctx.emit("tokenize.exact", rate["exact"], det,
                 f"x{rate['exact'] / rate['naive']:.2f} baseline; identical indices: {r['naive_equals_exact']}", done)
        ctx.emit("tokenize.fast", rate["fast"], det, f"x{rate['fast'] / rate['exact']:.2f} exact; {tail}", done)
        ctx.emit("tokenize.fast_vs_baseline", rate["fast"] / rate["naive"], det, "same run, same inputs", done)
        agree = r["agreement"]
        ctx.emit("tokenize.agreement", 100 * min(agree.values()), det,
                 f"frames {agree['frames']:.2%}, mels {agree['mels']:.2%} of {sum(r['tokens'].values())} tokens", done)

    ctx.progress("warm-up")
    measure_tokenize(img, aud, frames, mels, s["batch_size"], s["reps"], deadline=ctx.deadline, on_rep=report)


def _train_note(r: dict) -> str:
    mfu = f"MFU {r['mfu']:.1%}" if r["mfu"] is not None else "MFU n/a"
    mem = (f"peak {r['peak_alloc_gib']:.1f} GiB alloc / {r['peak_reserved_gib']:.1f} reserved"
           if "peak_alloc_gib" in r else f"max RSS {r['max_rss_gib']:.2f} GiB")
    left = "" if r["steps_timed"] >= r["steps_planned"] else "; budget exhausted"
    return (f"{r['preset']} b{r['batch']} {r['precision']}: {r['samples_per_s']:.1f} samples/s, {r['ms_per_step']:.0f} ms/step, {mfu}, {mem}, "
            f"{r['steps_timed']}/{r['steps_planned']} steps, warm-up {r['warmup_s']:.0f} s{left}")


def _train_row(ctx: Ctx, row_id: str, value_key: str, **kw: Any) -> None:
    ctx.progress("warm-up" + (" (compilation)" if kw.get("mode") == "compile" else ""))
    r = measure_train(device=ctx.device, deadline=ctx.deadline, **kw)
    value = r[value_key] if value_key in r else r["max_rss_gib"]  # memory rows: reserved on GPU, RSS on CPU
    ctx.emit(row_id, value, r, _train_note(r), r["steps_timed"] >= r["steps_planned"])


def part_train_eager(ctx: Ctx) -> None:
    _train_row(ctx, "train.bf16_eager", "samples_per_s", precision=ctx.sizes["half"], mode="eager",
               **ctx.sizes["train"])


def part_train_fp16(ctx: Ctx) -> None:
    _train_row(ctx, "train.fp16_b24", "peak_reserved_gib", precision="fp16", **ctx.sizes["fp16"])


def part_train_fp16_ckpt(ctx: Ctx) -> None:
    _train_row(ctx, "train.fp16_b24_ckpt", "peak_reserved_gib", precision="fp16", grad_checkpoint=True,
               **ctx.sizes["fp16"])


def part_train_compiled(ctx: Ctx) -> None:
    s = {**ctx.sizes["train"], **ctx.sizes["compile"]}
    _train_row(ctx, "train.bf16_compiled", "samples_per_s", precision=ctx.sizes["half"], mode="compile", **s)


def part_sample(ctx: Ctx) -> None:
    s = ctx.sizes["sample"]
    peak = peak_flops_for(ctx.device)
    ctx.progress("warm-up")
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    r = measure_sample(device=ctx.device, peak=peak / 1e12 if peak else None, deadline=ctx.deadline, **s)
    floor = f"floor {r['tflop_per_sample']:.3g} TFLOP/sample"
    if "ceiling_samples_per_s" in r:
        floor += f" = {r['ceiling_samples_per_s']:.1f} samples/s at peak, MFU {r['mfu']:.1%}"
    ctx.emit("sample.i2a", r["samples_per_s"], r,
             f"T={s['steps']}, cfg {s['cfg']:g}, batch {s['batch']}, {s['precision']}; {floor}; "
             f"{r['reps']}/{s['repeat']} reps", r["reps"] >= s["repeat"])


def _ddp_rank(rank: int, world: int, port: int, ctx: Ctx, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    cuda = ctx.device.type == "cuda"
    device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:  # fixed step counts: ranks must agree, so no deadline here (the part's kill still guards)
        r = measure_train(device=device, precision=ctx.sizes["half"], mode="eager", **ctx.sizes["train"])
    finally:
        dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(r, f)


def part_ddp(ctx: Ctx) -> None:
    cuda = ctx.device.type == "cuda"
    world = ctx.gpus if cuda else 2  # CPU: 2 gloo processes exercise the same path
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx.progress(f"{world} ranks")
    out = ctx.rows_path + ".ddp"
    procs = [mp.get_context("fork").Process(target=_ddp_rank, args=(r, world, port, ctx, out)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError(f"DDP rank exit codes {[p.exitcode for p in procs]}")
    ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(world)]
    slowest = max(r["ms_per_step"] for r in ranks)  # the all-reduce keeps ranks in step: the slowest sets it
    total = world * ranks[0]["batch"] * 1e3 / slowest
    ctx.emit("ddp.train", total, {"world": world, "ranks": ranks},
             f"{world} x batch {ranks[0]['batch']} eager {ranks[0]['precision']}, {'nccl' if cuda else 'gloo'}")


PARTS = (
    Part("device", 20, 3, (Row("device.matmul", "measured dense matmul rate", "TFLOP/s"),), part_device),
    Part("tokenize", 80, 12, (
        Row("tokenize.baseline", "tokenize, straightforward baseline", "clips/s"),
        Row("tokenize.exact", "tokenize, exact mode", "clips/s"),
        Row("tokenize.fast", "tokenize, fast mode", "clips/s", ">=", 150),
        Row("tokenize.fast_vs_baseline", "tokenize, fast / baseline", "x", ">=", 2.8),
        Row("tokenize.agreement", "tokenize, fast-vs-exact indices (min of frames, mels)", "%", ">=", 99),
    ), part_tokenize),
    Part("train_eager", 45, 7, (Row("train.bf16_eager", "train large bf16 b128, eager", "samples/s"),),
         part_train_eager),
    Part("train_fp16", 40, 6, (Row("train.fp16_b24", "train large fp16+GradScaler b24: peak memory", "GiB", "<",
                                   MEM_LIMIT_GIB),), part_train_fp16),
    Part("train_fp16_ckpt", 45, 6, (Row("train.fp16_b24_ckpt", "same, --grad-checkpoint: peak memory", "GiB",
                                        "<", MEM_LIMIT_GIB),), part_train_fp16_ckpt),
    Part("sample", 60, 7, (Row("sample.i2a", "sample image->audio T=30 CFG b64", "samples/s", ">=", 20),),
         part_sample),
    Part("ddp", 90, 11, (Row("ddp.train", "train bf16 b128/GPU eager, DDP on all GPUs", "samples/s"),), part_ddp),
    Part("train_compiled", 170, 18, (Row("train.bf16_compiled", "train large bf16 b128, torch.compile",
                                         "samples/s", ">=", 550),), part_train_compiled),
)


# -- the parent: budgets, child processes, table -------------------------------------------------------------
def _count_gpus(queue: Any) -> None:
    queue.put(torch.cuda.device_count() if torch.cuda.is_available() else 0)


def prewarm() -> None:
    """Pay once, before forking, the lazy imports every part would repeat: the first optimizer pulls in
    torch._dynamo (seconds; on a loaded 2-core machine 6 s per part). Touches no CUDA."""
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])


def probe_gpus() -> int:
    """Visible GPUs, counted in a forked process: the parent must never initialise CUDA, or no forked
    part could use it (cudaGetDeviceCount alone runs cuInit)."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_count_gpus, args=(queue,))
    proc.start()
    proc.join(120)
    return int(queue.get()) if proc.exitcode == 0 else 0


def _child(part: Part, ctx: Ctx, log_path: str) -> None:
    """A part's process: own process group (so a kill takes its compile workers and DDP ranks along), own
    log (the parent prints only the table), exit 1 with the traceback in the rows file if it raised."""
    os.setpgrp()
    if ctx.tiny:  # on a shared 2-core machine one thread is 10-20x faster than two fighting over the cores
        torch.set_num_threads(1)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        part.run(ctx)
    except BaseException as e:  # noqa: BLE001 - any failure is reported in the row, then the exit code
        traceback.print_exc()
        ctx._write({"error": f"{type(e).__name__}: {e}"[:500]})
        sys.stdout.flush()
        os._exit(1)


def run_part(part: Part, ctx: Ctx, budget_s: float, workdir: Path) -> dict:
    """Run one part in a forked process under `budget_s`; returns its outcome and its records."""
    log_path = str(workdir / f"{part.name}.log")
    ctx.rows_path = str(workdir / f"{part.name}.jsonl")
    start = time.time()
    ctx.deadline = Deadline(start + 0.8 * budget_s)  # soft: stop repeating, report; the rest is slack
    proc = mp.get_context("fork").Process(target=_child, args=(part, ctx, log_path), daemon=False)
    proc.start()
    try:
        proc.join(budget_s)
    finally:  # also on Ctrl-C: the child's own process group does not get the terminal's signal
        killed = proc.is_alive()
        try:  # hard stop, or a sweep of what the part left behind (compile workers, DDP ranks)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # none left; or killed before its setpgrp, with no children yet
            if proc.is_alive():
                proc.kill()
        proc.join()
    records = []
    if os.path.exists(ctx.rows_path):
        records = [json.loads(line) for line in Path(ctx.rows_path).read_text().splitlines() if line.strip()]
    log = Path(log_path).read_text(errors="replace") if os.path.exists(log_path) else ""
    return {"killed": killed, "exitcode": proc.exitcode, "wall_s": time.time() - start, "budget_s": budget_s,
            "records": records, "log_tail": log[-3000:]}


def merge_rows(part: Part, outcome: dict | None, cuda: bool, skip: str | None = None) -> list[dict]:
    """The part's declared rows, filled from its records (the last report of a row wins)."""
    outcome = outcome or {"records": [], "killed": False, "exitcode": None}
    last = {r["row"]: r for r in outcome["records"] if "row" in r}
    where = next((r["progress"] for r in reversed(outcome["records"]) if "progress" in r), "start-up")
    error = next((r["error"] for r in outcome["records"] if "error" in r), None)
    if error is None and outcome["exitcode"] not in (0, None) and not outcome["killed"]:
        error = f"exit code {outcome['exitcode']}: {outcome.get('log_tail', '')[-200:]}"
    rows = []
    for spec in part.rows:
        rec = last.get(spec.id)
        row = {"id": spec.id, "part": part.name, "what": spec.what, "unit": spec.unit, "target": spec.target,
               "value": None, "status": "ok", "result": "", "note": "", "details": {}}
        if skip:
            row.update(status="skipped", result="skipped", note=skip)
        elif rec is not None:
            row.update(value=rec["value"], note=rec["note"], details=rec["details"],
                       status="ok" if rec["complete"] else "budget exhausted")
        elif outcome["killed"]:
            row.update(status="budget exhausted", note=f"budget exhausted during {where}, nothing measured")
        else:
            row.update(status="error", note=error or "the part ended without reporting this row")
        if error is not None and row["status"] != "skipped" and rec is not None:
            row.update(status="error", note=f"{row['note']}; then {error}")
        row["result"] = judge(spec, row, cuda)
        rows.append(row)
    return rows


def judge(spec: Row, row: dict, cuda: bool) -> str:
    """pass / fail against the target (on CUDA only), else what the row is."""
    if row["status"] in ("skipped", "error") or row["value"] is None:
        return row["status"]
    if spec.op is None:
        return "info"
    if not cuda:
        return "n/a on CPU"
    ok = row["value"] >= spec.threshold if spec.op == ">=" else row["value"] < spec.threshold
    return "pass" if ok else "fail"


def plan_budgets(parts: list[Part], tiny: bool, total_s: float) -> dict[str, float]:
    """Each part's share, scaled down together if they add up to more than the total."""
    shares = {p.name: p.tiny_share_s if tiny else p.share_s for p in parts}
    scale = min(1.0, total_s / sum(shares.values()))
    return {k: v * scale for k, v in shares.items()}


def format_table(rows: list[dict], header: str) -> str:
    cols = [("row", lambda r: r["id"]), ("value", lambda r: "-" if r["value"] is None else f"{r['value']:.4g}"),
            ("unit", lambda r: r["unit"]), ("target", lambda r: r["target"]), ("result", lambda r: r["result"]),
            ("note", lambda r: r["note"])]
    cells = [[c[0] for c in cols]] + [[str(fn(r)) for _, fn in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols) - 1)]
    lines = [header]
    for n, line in enumerate(cells):
        lines.append(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + " | " + line[-1])
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 4)
    return "\n".join(lines)


def add_ratios(rows: list[dict]) -> None:
    """Cross-part figures: DDP scaling against world × the single-process eager figure of this run."""
    by_id = {r["id"]: r for r in rows}
    ddp, eager = by_id.get("ddp.train"), by_id.get("train.bf16_eager")
    if ddp and eager and ddp["value"] and eager["value"]:
        world = ddp["details"]["world"]
        ratio = ddp["value"] / (world * eager["value"])
        ddp["details"]["scaling"] = ratio
        ddp["note"] += f"; scaling {ratio:.2f} of {world} x single eager"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_suite.json", help="JSON results (default: %(default)s)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes on CPU: the CI smoke test")
    ap.add_argument("--device", default="auto", help="auto (cuda if visible, else cpu), cuda, cuda:N or cpu")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="whole-suite time budget (default: 460 s on GPU, +90 with several GPUs; 60 s --tiny)")
    ap.add_argument("--only", default=None, help="comma list of parts to run (default all): "
                    + ",".join(p.name for p in PARTS))
    args = ap.parse_args()
    prewarm()
    t0 = time.time()  # the budget clock starts after the parent's own imports and prewarm
    gpus = probe_gpus() if args.device != "cpu" and not (args.tiny and args.device == "auto") else 0
    name = args.device if args.device != "auto" else ("cuda" if gpus else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda:0")
    cuda = device.type == "cuda"
    only = set(args.only.split(",")) if args.only else {p.name for p in PARTS}
    skips = {"ddp": f"skipped ({gpus} GPU)"} if cuda and gpus < 2 else {}
    parts = [p for p in PARTS if p.name in only]
    running = [p for p in parts if p.name not in skips]
    total = args.budget_s or (60.0 if args.tiny else sum(p.share_s for p in running))
    shares = plan_budgets(running, args.tiny, total)
    ctx = Ctx(device=device, tiny=args.tiny, deadline=Deadline(), rows_path="", sizes=TINY if args.tiny else FULL,
              gpus=gpus)
    rows, outcomes = [], {}
    with tempfile.TemporaryDirectory(prefix="gpu_suite-") as tmp:
        for part in parts:
            if part.name in skips:
                rows += merge_rows(part, None, cuda, skips[part.name])
                continue
            later = sum(shares[p.name] for p in running[running.index(part) + 1:])
            budget = max(1.0, total - (time.time() - t0) - later)
            print(f"[{time.time() - t0:5.0f} s] {part.name}: budget {budget:.0f} s", file=sys.stderr, flush=True)
            out = run_part(part, ctx, budget, Path(tmp))
            outcomes[part.name] = {k: v for k, v in out.items() if k != "records"}
            rows += merge_rows(part, out, cuda)
    add_ratios(rows)
    wall = time.time() - t0
    where = rows[0]["details"].get("device", name) if rows and rows[0]["id"] == "device.matmul" else name
    header = (f"avtok gpu_suite on {where}{' (--tiny: tiny sizes, CPU figures are not targets)' if args.tiny else ''}"
              f": {wall:.0f} s wall of a {total:.0f} s budget")
    result = {"suite": "bench/gpu_suite.py", "tiny": args.tiny, "device": str(device), "device_name": where,
              "gpus": gpus, "torch": torch.__version__, "budget_s": total, "wall_s": wall,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t0)), "parts": outcomes, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(format_table(rows, header), flush=True)
    return 1 if any(r["status"] == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
