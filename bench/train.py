"""Training throughput of the AV transformer: samples/s, tokens/s, MFU and peak memory.

    python bench/train.py --preset large --batch 128 --precision bf16 --modes eager,compile
    python bench/train.py --preset tiny --batch 16 --device cpu
    python bench/train.py --batch 32 --device cpu --threads 2 --set dim=32 --set dec_dim=32 ... \
        --vs drop_rule=masked --vs drop_rule=masked,dec_dim=16      # model variants against the first

`--set KEY=VALUE` changes the preset for every run; each `--vs` adds a run with more changes after the
plain one, so the printed ratio compares like with like.

One full training step as in avtok train (masking + drop, autocast, GradScaler for fp16, clip 3.0,
fused AdamW on GPU) on random tokens. Each mode runs in the same process, so the printed ratio to the
first mode compares like with like. MFU = FLOPs per sample (docs/method.md, "Size and cost"; ×3 for training) ×
samples/s / peak; on CPU the peak is measured with a large fp32 matmul unless --peak-tflops is given.
`measure_train` is also what bench/gpu_suite.py runs (one implementation for both).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from avtok.model.config import AVConfig, parse_overrides, preset
from avtok.model.precision import resolve_device
from avtok.model.train import TrainConfig, make_optimizer
from avtok.model.transformer import AVTransformer, flops_per_sample, n_encoder_tokens, num_params
from common import (
    Deadline,
    device_name,
    peak_flops_for,
    peak_memory,
    reset_peak_memory,
    resolve_precision,
    sync,
)
from torch.nn.parallel import DistributedDataParallel as DDP


def train_step(preset_name: str, batch: int, precision: str, mode: str, grad_checkpoint: bool,
               device: torch.device, backend: str = "inductor", overrides: dict | None = None,
               ) -> tuple[Callable[[], None], AVConfig, AVTransformer, torch.dtype]:
    """Build model, optimizer and random tokens; return one optimizer step as a closure. Under an
    initialized process group the model is wrapped in DDP, as avtok train does for torchrun. `backend`:
    torch.compile's (aot_eager traces the same graphs without code generation: the CPU smoke test)."""
    dtype = resolve_precision(precision, device)
    cfg = preset(preset_name, grad_checkpoint=grad_checkpoint, **(overrides or {}))
    torch.manual_seed(0)
    raw = AVTransformer(cfg).to(device)
    model: torch.nn.Module = torch.compile(raw, backend=backend) if mode == "compile" else raw
    if dist.is_available() and dist.is_initialized():
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    opt = make_optimizer(raw, 1e-4, TrainConfig(shards="", out=""), device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    img = torch.randint(0, cfg.image_codebook, (batch, cfg.image_tokens), device=device)
    aud = torch.randint(0, cfg.audio_codebook, (batch, cfg.audio_tokens), device=device)
    # masks: own generator in eager mode; compiled graphs take the global RNG (as model/train.py does)
    gen = None if mode == "compile" else torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        with autocast:
            loss, _ = model(img, aud, generator=gen)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(raw.parameters(), 3.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step, cfg, raw, dtype


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int,
               deadline: Deadline) -> tuple[float, float, int]:
    """(warm-up seconds, seconds per timed step, timed steps). Stops timing early once the deadline has
    passed, after at least one step, so a slow configuration reports what it measured."""
    t = _now(device)
    for _ in range(warmup):
        step()
    sync(device)
    warm_s = _now(device) - t
    reset_peak_memory(device)
    t = _now(device)
    done = 0
    while done < steps:
        step()
        done += 1
        if deadline.passed():
            break
    sync(device)
    return warm_s, (_now(device) - t) / done, done


def _now(device: torch.device) -> float:
    """Host clock after the device's queued work (device work is asynchronous)."""
    sync(device)
    return time.perf_counter()


def measure_train(preset_name: str = "tiny", batch: int = 16, precision: str = "auto", mode: str = "eager",
                  grad_checkpoint: bool = False, steps: int = 5, warmup: int = 2,
                  device: torch.device | str = "auto", peak_tflops: float | None = None,
                  deadline: Deadline | None = None, backend: str = "inductor", overrides: dict | None = None) -> dict:
    """Throughput, MFU and peak memory of `steps` training steps after `warmup` (compilation) steps;
    `overrides` change the preset's AVConfig fields."""
    device = resolve_device(str(device), 0) if not isinstance(device, torch.device) else device
    step, cfg, raw, dtype = train_step(preset_name, batch, precision, mode, grad_checkpoint, device, backend,
                                       overrides)
    warm_s, dt, done = time_steps(step, device, warmup, steps, deadline or Deadline())
    sps = batch / dt
    fps = flops_per_sample(cfg)
    peak = peak_flops_for(device, peak_tflops)
    mem = peak_memory(device)
    return {"preset": preset_name, "mode": mode if mode == "eager" else f"{mode} ({backend})", "batch": batch, "grad_checkpoint": grad_checkpoint,
            "ms_per_step": 1e3 * dt, "samples_per_s": sps,
            "tokens_per_s": sps * (cfg.image_tokens + cfg.audio_tokens), "tflops": fps * sps / 1e12,
            "mfu": fps * sps / peak if peak else None, "peak_tflops": peak / 1e12 if peak else None,
            "peak_mem_gib": mem.get("peak_alloc_gib", mem.get("max_rss_gib")), **mem, "warmup_s": warm_s,
            "steps_timed": done, "steps_planned": steps, "params": num_params(raw),
            "enc_tokens": n_encoder_tokens(cfg), "gflop_per_sample": fps / 1e9, "device": device_name(device),
            "precision": str(dtype).split(".")[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--modes", default="eager", help="comma list of eager, compile")
    p.add_argument("--grad-checkpoint", action="store_true")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="AVConfig change for every run (repeatable)")
    p.add_argument("--vs", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="a model variant timed after the plain one (repeatable)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        common = parse_overrides(args.sets)
        variants = [("", common)] + [(v, {**common, **parse_overrides(v.split(","))}) for v in args.vs]
    except ValueError as e:
        raise SystemExit(f"--set/--vs {e}") from None
    base = None
    for mode, (label, overrides) in itertools.product(args.modes.split(","), variants):
        r = measure_train(args.preset, args.batch, args.precision, mode, args.grad_checkpoint, args.steps,
                          args.warmup, args.device, args.peak_tflops, overrides=overrides)
        base = base or r["samples_per_s"]
        mfu = f"{100 * r['mfu']:.1f}% of {r['peak_tflops']:.3g} TF" if r["mfu"] is not None else "n/a"
        print(f"{args.preset} {r['precision']} batch {args.batch} {f'{mode} {label}'.strip()} on {r['device']}: "
              f"{r['samples_per_s']:.1f} samples/s ({r['ms_per_step']:.0f} ms/step, ×{r['samples_per_s'] / base:.2f}) | "
              f"{r['tokens_per_s']:.0f} tokens/s | {r['gflop_per_sample']:.3f} GFLOP/sample → {r['tflops']:.4f} TFLOP/s | "
              f"MFU {mfu} | peak mem {r['peak_mem_gib']:.2f} GiB | warmup {r['warmup_s']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
