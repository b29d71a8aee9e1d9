"""Tokenizer throughput: clips/s (10 frames 3×256×256 + one mel 1×80×848 per clip) on the real VQGAN
architectures (random weights), for three ways of running them, plus fast-mode index agreement.

  naive  a per-image fp32 loop under no_grad with default backend settings and the reference's
         out-of-place ops (how the reference code is usually called: one `model.encode(x)` per image)
  exact  avtok's exact mode: batched, inference_mode, fp32, TF32 off, reference op order, in-place
         activations/residual adds (bit-identical values, far fewer large allocations)
  fast   avtok's fast mode: batched, fp16 (GPU) / bf16 (CPU) autocast convs, channels_last on
         GPU, SDPA attention, fused SiLU; nearest-codebook search in fp32

    python bench/tokenizing.py                      # CPU: 2 clips, few repetitions (slow hardware)
    python bench/tokenizing.py --device cuda        # GPU: 64 clips
    python bench/tokenizing.py --explore            # also time layout/precision variants on one batch

Random weights: codebook N(0,1) and quant_conv rescaled so that z spreads like the codebook (many
codes in use), inputs are smooth random images / mels. Agreement is measured on these weights; the
published weights may agree more or less.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from avtok.model.tokenizers.vqgan import SPECVQGAN_VGGSOUND, TAMING_F16_1024, VQGAN, fast_dtype
from avtok.model.tokenizers.vqgan_tokenizer import VQGANTokenizer


def random_tokenizer(kind: str, device: torch.device, seed: int) -> VQGANTokenizer:
    cfg, modality, size = ((TAMING_F16_1024, "image", (256, 256)) if kind == "taming"
                           else (SPECVQGAN_VGGSOUND, "audio", (80, 848)))
    torch.manual_seed(seed)
    model = VQGAN(cfg).eval()
    with torch.no_grad():
        model.quantize.embedding.weight.normal_()
        std = float(model.quant_conv(model.encoder(torch.rand(1, cfg.in_channels, 64, 64) * 2 - 1)).std())
        model.quant_conv.weight /= std
        model.quant_conv.bias /= std
    return VQGANTokenizer(model, kind, "<random>", "random", size, modality).to(device)


def smooth_inputs(n: int, channels: int, size: tuple[int, int], device: torch.device, seed: int) -> torch.Tensor:
    """Low-frequency random fields plus a little pixel noise, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, size[0] // 16, size[1] // 16, generator=g) * 2 - 1
    x = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    x = x + 0.05 * torch.randn(n, channels, *size, generator=g)
    return x.clamp(-1, 1).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive(img: VQGANTokenizer, aud: VQGANTokenizer, frames: torch.Tensor, mels: torch.Tensor):
    img.fast = aud.fast = False
    for tok in (img, aud):
        tok.model.set_inplace(False)  # the reference's out-of-place activations and residual adds
    try:
        with torch.no_grad():
            fi = torch.cat([img.model.encode_indices(frames[i:i + 1]) for i in range(len(frames))])
            ai = torch.cat([aud.model.encode_indices(mels[i:i + 1]) for i in range(len(mels))])
    finally:
        for tok in (img, aud):
            tok.model.set_inplace(True)
    return fi, ai


def batched(img: VQGANTokenizer, aud: VQGANTokenizer, frames: torch.Tensor, mels: torch.Tensor, fast: bool,
            batch_size: int):
    img.fast = aud.fast = fast
    fi = torch.cat([img.encode(frames[s:s + batch_size]) for s in range(0, len(frames), batch_size)])
    ai = torch.cat([aud.encode(mels[s:s + batch_size]) for s in range(0, len(mels), batch_size)])
    return fi, ai


def explore(img: VQGANTokenizer, frames: torch.Tensor, device: torch.device) -> None:
    """Time one batch of frames through the encoder in several layouts/precisions (best of 2)."""
    m = img.model
    variants = {}
    for fast in (False, True):
        for layout in ("contiguous", "channels_last"):
            for dtype in (None, fast_dtype(device)):
                variants[(fast, layout, dtype)] = None
    print(f"\nexplore: encoder on a batch of {len(frames)} frames, seconds (best of 2)")
    for fast, layout, dtype in variants:
        m.set_fast(fast)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        m.to(memory_format=fmt)
        x = frames.contiguous(memory_format=fmt)
        best = float("inf")
        for _ in range(2):
            sync(device)
            t0 = time.perf_counter()
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                        enabled=dtype is not None):
                m.quant_conv(m.encoder(x))
            sync(device)
            best = min(best, time.perf_counter() - t0)
        ops = "fused SiLU+SDPA" if fast else "reference ops"
        print(f"  {ops:16s} {layout:14s} {str(dtype or torch.float32):15s} {best:8.2f}")
    m.to(memory_format=torch.contiguous_format)
    img.fast = False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--clips", type=int, default=None, help="default: 64 on GPU, 2 on CPU")
    ap.add_argument("--batch-size", type=int, default=None, help="frames/mels per forward (default 64 GPU, 11 CPU)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per mode (default 3 GPU, 2 CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--fast-dtype", choices=["auto", "bf16", "fp16"], default="auto",
                    help="autocast dtype of fast mode (auto: fp16 on GPU, bf16 on CPU)")
    ap.add_argument("--explore", action="store_true")
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    clips = args.clips or (64 if gpu else 2)
    bs = args.batch_size or (64 if gpu else 11)
    reps = args.reps or (3 if gpu else 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    fdt = {"auto": fast_dtype(device), "bf16": torch.bfloat16, "fp16": torch.float16}[args.fast_dtype]
    print(f"device: {name}; torch {torch.__version__}; fast dtype {fdt}; {clips} clips "
          f"= {clips * 10} frames + {clips} mels; batch {bs}; {reps} reps")

    img, aud = random_tokenizer("taming", device, 0), random_tokenizer("specvqgan", device, 1)
    chosen = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.fast_dtype]
    img.fast_dtype = aud.fast_dtype = chosen
    frames = smooth_inputs(clips * 10, 3, (256, 256), device, 2)
    mels = smooth_inputs(clips, 1, (80, 848), device, 3)

    modes = {"exact": lambda: batched(img, aud, frames, mels, False, bs),
             "fast": lambda: batched(img, aud, frames, mels, True, bs)}
    if not args.skip_naive:
        modes = {"naive": lambda: naive(img, aud, frames, mels), **modes}
    # warm-up (cuDNN algorithm choice, allocator) on a small slice
    for mode in ("exact", "fast"):
        batched(img, aud, frames[:2], mels[:1], mode == "fast", bs)
    if not args.skip_naive:
        naive(img, aud, frames[:1], mels[:1])
    times: dict[str, list[float]] = {m: [] for m in modes}
    results = {}
    for _ in range(reps):  # interleaved so that load changes on a shared machine hit every mode alike
        for mode, fn in modes.items():
            sync(device)
            t0 = time.perf_counter()
            results[mode] = fn()
            sync(device)
            times[mode].append(time.perf_counter() - t0)
    print(f"\n{'mode':6s} {'clips/s (median)':>17s} {'clips/s (best)':>15s}  seconds per rep")
    rate = {}
    for mode, ts in times.items():
        rate[mode] = clips / statistics.median(ts)
        print(f"{mode:6s} {rate[mode]:17.3f} {clips / min(ts):15.3f}  {', '.join(f'{t:.1f}' for t in ts)}")
    if "naive" in rate:
        same = all(torch.equal(a, b) for a, b in zip(results["naive"], results["exact"], strict=True))
        print(f"\nexact / naive = {rate['exact'] / rate['naive']:.2f}x, fast / naive = "
              f"{rate['fast'] / rate['naive']:.2f}x; naive and exact indices identical: {same}")
    print(f"fast / exact = {rate['fast'] / rate['exact']:.2f}x")
    fi, ai = results["fast"]
    ei, ea = results["exact"]
    print(f"fast-mode index agreement with exact: frames {(fi == ei).float().mean().item():.4%}, "
          f"mels {(ai == ea).float().mean().item():.4%} ({fi.numel()} + {ai.numel()} tokens; "
          f"{len(torch.unique(ei))} distinct frame codes)")
    if args.explore:
        explore(img, frames[:bs], device)


if __name__ == "__main__":
    main()
