"""Training throughput of the AV transformer: samples/s, tokens/s, MFU and peak memory.

    python bench/train.py --preset large --batch 128 --precision bf16 --modes eager,compile
    python bench/train.py --preset tiny --batch 16 --device cpu

One full training step as in avtok train (masking + drop, autocast, GradScaler for fp16, clip 3.0,
fused AdamW on GPU) on random tokens. Each mode runs in the same process, so the printed ratio to the
first mode compares like with like. MFU = FLOPs per sample (facts/method.md §3.7, ×3 for training) ×
samples/s / peak; on CPU the peak is measured with a large fp32 matmul unless --peak-tflops is given.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from avtok.model.config import preset
from avtok.model.precision import peak_flops, resolve_device, resolve_precision
from avtok.model.train import TrainConfig, make_optimizer
from avtok.model.transformer import AVTransformer, flops_per_sample, n_encoder_tokens, num_params


def cpu_matmul_peak(n: int = 1024, reps: int = 10) -> float:
    """Achieved fp32 matmul FLOP/s on this CPU (the practical peak for CPU MFU)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def run(args: argparse.Namespace, mode: str) -> dict:
    device = resolve_device(args.device, 0)
    dtype = resolve_precision(args.precision, device)
    cfg = preset(args.preset, grad_checkpoint=args.grad_checkpoint)
    torch.manual_seed(0)
    raw = AVTransformer(cfg).to(device)
    model = torch.compile(raw) if mode == "compile" else raw
    opt = make_optimizer(raw, 1e-4, TrainConfig(shards="", out=""), device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    b = args.batch
    img = torch.randint(0, cfg.image_codebook, (b, cfg.image_tokens), device=device)
    aud = torch.randint(0, cfg.audio_codebook, (b, cfg.audio_tokens), device=device)
    gen = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        with autocast:
            loss, _ = model(img, aud, generator=gen)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(raw.parameters(), 3.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warm_s = time.perf_counter() - t
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    dt = (time.perf_counter() - t) / args.steps
    sps = b / dt
    fps = flops_per_sample(cfg)
    peak = peak_flops(device, args.peak_tflops)
    if peak is None and device.type == "cpu":
        peak = cpu_matmul_peak()
    mem = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"mode": mode, "ms_per_step": 1e3 * dt, "samples_per_s": sps,
            "tokens_per_s": sps * (cfg.image_tokens + cfg.audio_tokens), "tflops": fps * sps / 1e12,
            "mfu": fps * sps / peak if peak else None, "peak_tflops": peak / 1e12 if peak else None,
            "peak_mem_gib": mem, "warmup_s": warm_s, "params": num_params(raw), "enc_tokens": n_encoder_tokens(cfg),
            "gflop_per_sample": fps / 1e9, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "cpu", "precision": str(dtype).split(".")[-1]}


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
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = None
    for mode in args.modes.split(","):
        r = run(args, mode)
        base = base or r["samples_per_s"]
        mfu = f"{100 * r['mfu']:.1f}% of {r['peak_tflops']:.3g} TF" if r["mfu"] is not None else "n/a"
        print(f"{args.preset} {r['precision']} batch {args.batch} {mode} on {r['device']}: "
              f"{r['samples_per_s']:.1f} samples/s ({r['ms_per_step']:.0f} ms/step, ×{r['samples_per_s'] / base:.2f}) | "
              f"{r['tokens_per_s']:.0f} tokens/s | {r['gflop_per_sample']:.3f} GFLOP/sample → {r['tflops']:.4f} TFLOP/s | "
              f"MFU {mfu} | peak mem {r['peak_mem_gib']:.2f} GiB | warmup {r['warmup_s']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
