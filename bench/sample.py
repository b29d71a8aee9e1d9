"""Sampling throughput: image->audio, T steps with CFG (cond + uncond in one 2B forward), random weights.

    python bench/sample.py --preset large --precision bf16 --batch 64            # one H100: the target
    python bench/sample.py --preset tiny --precision fp32 --batch 8 --device cpu # CPU smoke run

Prints, per preset and precision: samples/s, seconds per batch, and the FLOP floor beside it:
forward FLOPs per sequence (model.transformer.flops_per_sample, inference: nothing dropped) × 2
sequences (CFG) × T steps per sample, and the samples/s that would take at the device's dense peak
(the ceiling) with the achieved fraction of it (MFU). On CPU the peak is the measured fp32 matmul rate
unless --peak-tflops is given. `measure_sample` is also what bench/gpu_suite.py runs.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from avtok.model.config import preset
from avtok.model.geometry import IMAGE_TOKENS as N_IMAGE
from avtok.model.sampler import sample
from avtok.model.transformer import AVTransformer, flops_per_sample, num_params
from common import Deadline, device_name, peak_flops_for, sync

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def measure_sample(name: str, precision: str, batch: int, steps: int, cfg: float, device: torch.device,
                   repeat: int, peak: float | None, compile_model: bool = False,
                   deadline: Deadline | None = None) -> dict:
    """image->audio samples/s (best of `repeat` after a T=2 warm-up; fewer once `deadline` has passed)
    beside the FLOP floor; `peak` in TFLOP/s gives the ceiling and MFU."""
    deadline = deadline or Deadline()
    torch.manual_seed(0)
    config = preset(name)
    model = AVTransformer(config).to(device).eval()
    if precision != "fp32":
        model = model.to(DTYPES[precision])  # weights in half precision: no per-step casts
    if compile_model:  # static shapes (2B × 521 every step): one compilation, paid in the warm-up
        model.forward_logits = torch.compile(model.forward_logits)
    tokens = torch.randint(0, config.image_codebook, (batch, N_IMAGE), device=device)
    gen = torch.Generator(device=device)

    def once(t: int) -> float:
        gen.manual_seed(0)
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            sample(model, "image2audio", image_tokens=tokens, steps=t, cfg=cfg, generator=gen)
        sync(device)
        return time.perf_counter() - start

    once(2)  # warm-up: kernels, allocator, compilation
    times = []
    for _ in range(repeat):
        times.append(once(steps))
        if deadline.passed():
            break
    secs = min(times)
    flop = flops_per_sample(config, training=False) * (2 if cfg != 0 else 1) * steps
    rate = batch / secs
    row = {"preset": name, "precision": precision, "batch": batch, "steps": steps, "cfg": cfg,
           "compiled": compile_model, "params_M": num_params(model) / 1e6, "seconds": secs, "reps": len(times),
           "samples_per_s": rate, "tflop_per_sample": flop / 1e12, "achieved_tflops": rate * flop / 1e12,
           "device": device_name(device)}
    if peak is not None:
        row["ceiling_samples_per_s"] = peak * 1e12 / flop
        row["mfu"] = row["achieved_tflops"] / peak
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", nargs="+", default=["large"], choices=["tiny", "base", "large"])
    ap.add_argument("--precision", nargs="+", default=["bf16"], choices=list(DTYPES))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense peak of this device (TFLOP/s)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model's forward")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    peak_flops = peak_flops_for(device, args.peak_tflops)
    peak = peak_flops / 1e12 if peak_flops else None
    with contextlib.suppress(Exception):
        torch.backends.cuda.matmul.allow_tf32 = True
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {where}; image->audio, T={args.steps}, cfg={args.cfg:g} (2B forward), batch {args.batch}"
          + ("" if device.type == "cuda" else "  [CPU run: batch and timings are not the GPU target]"))
    for name in args.preset:
        for precision in args.precision:
            r = measure_sample(name, precision, args.batch, args.steps, args.cfg, device, args.repeat, peak, args.compile)
            ceiling = (f"ceiling {r['ceiling_samples_per_s']:.1f} samples/s at {peak:g} TFLOP/s, MFU {r['mfu']:.1%}"
                       if peak is not None else "no peak known (pass --peak-tflops)")
            print(f"{name:5s} {precision:4s} {r['params_M']:7.1f}M params: {r['samples_per_s']:8.2f} samples/s "
                  f"({r['seconds']:.2f} s per {args.batch}) | FLOP floor {r['tflop_per_sample']:.4f} TFLOP/sample, "
                  f"achieved {r['achieved_tflops']:.3f} TFLOP/s, {ceiling}")


if __name__ == "__main__":
    main()
