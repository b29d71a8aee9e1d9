"""Tokenizer throughput: clips/s (10 frames 3×256×256 + one mel 1×80×848 per clip) on the real VQGAN
architectures (random weights), for three ways of running them, plus fast-mode index agreement.

  naive  the straightforward baseline: one clip per forward (its 10 frames, then its mel), fp32 under
         no_grad with the backend's default settings (default cuDNN, no channels_last) and the
         reference's out-of-place ops (how the reference code is usually called)
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
from collections.abc import Callable

import torch
import torch.nn.functional as F
from avtok.model.geometry import FRAME_SIZE, MEL_SHAPE, N_FRAMES
from avtok.model.tokenizers.vqgan import SPECVQGAN_VGGSOUND, TAMING_F16_1024, VQGAN, VQGANConfig, fast_dtype
from avtok.model.tokenizers.vqgan_tokenizer import VQGANTokenizer
from common import Deadline, sync

FRAMES_PER_CLIP = N_FRAMES
# (image input H×W, mel input H×W); "small": the --tiny smoke test's narrow VQGANs (ch 32, same depth,
# same 16× downsampling, attention at the last level) on 32×32 frames and 80×48 mels.
SIZES = {"full": ((FRAME_SIZE, FRAME_SIZE), MEL_SHAPE), "small": ((32, 32), (80, 48))}
SMALL = {"taming": VQGANConfig(ch=32, resolution=32, attn_resolutions=(2,)),
         "specvqgan": VQGANConfig(in_channels=1, out_ch=1, ch=32, resolution=48, attn_resolutions=(3,))}


def random_tokenizer(kind: str, device: torch.device, seed: int, small: bool = False) -> VQGANTokenizer:
    """A tokenizer with the published layout (or the small one) and random weights, spread so that
    many codes are in use."""
    cfg, modality = (TAMING_F16_1024, "image") if kind == "taming" else (SPECVQGAN_VGGSOUND, "audio")
    cfg = SMALL[kind] if small else cfg
    size = SIZES["small" if small else "full"][0 if kind == "taming" else 1]
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
    low = torch.rand(n, channels, max(1, size[0] // 16), max(1, size[1] // 16), generator=g) * 2 - 1
    x = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    x = x + 0.05 * torch.randn(n, channels, *size, generator=g)
    return x.clamp(-1, 1).to(device)


def clip_inputs(clips: int, device: torch.device, small: bool = False,
                frames_per_clip: int = FRAMES_PER_CLIP) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames [clips·frames_per_clip, 3, H, W], mels [clips, 1, 80, W]) in [-1, 1], clip-major."""
    image, mel = SIZES["small" if small else "full"]
    return (smooth_inputs(clips * frames_per_clip, 3, image, device, 2), smooth_inputs(clips, 1, mel, device, 3))


def naive(img: VQGANTokenizer, aud: VQGANTokenizer, frames: torch.Tensor, mels: torch.Tensor):
    """The straightforward baseline: one clip per forward (its 10 frames, then its mel), fp32 under
    no_grad with the backend's default settings (cuDNN defaults, no channels_last), reference ops."""
    img.fast = aud.fast = False
    for tok in (img, aud):
        tok.model.set_inplace(False)  # the reference's out-of-place activations and residual adds
    fi, ai = [], []
    per = len(frames) // len(mels)  # frames per clip (clip-major, as clip_inputs makes them)
    try:
        with torch.no_grad():
            for c in range(len(mels)):
                fi.append(img.model.encode_indices(frames[c * per:(c + 1) * per]))
                ai.append(aud.model.encode_indices(mels[c:c + 1]))
    finally:
        for tok in (img, aud):
            tok.model.set_inplace(True)
    return torch.cat(fi), torch.cat(ai)


def batched(img: VQGANTokenizer, aud: VQGANTokenizer, frames: torch.Tensor, mels: torch.Tensor, fast: bool,
            batch_size: int):
    img.fast = aud.fast = fast
    fi = torch.cat([img.encode(frames[s:s + batch_size]) for s in range(0, len(frames), batch_size)])
    ai = torch.cat([aud.encode(mels[s:s + batch_size]) for s in range(0, len(mels), batch_size)])
    return fi, ai


def measure_tokenize(img: VQGANTokenizer, aud: VQGANTokenizer, frames: torch.Tensor, mels: torch.Tensor,
                     batch_size: int, reps: int, naive_mode: bool = True, deadline: Deadline | None = None,
                     on_rep: Callable[[dict], None] | None = None) -> dict:
    """clips/s per mode (median over reps, interleaved so that load changes hit every mode alike) and the
    fast-vs-exact index agreement. Stops after the rep during which `deadline` passed; `on_rep` gets the
    summary after every rep (what a time-budgeted caller reports if it is stopped)."""
    device, clips = frames.device, len(mels)
    modes = {"exact": lambda: batched(img, aud, frames, mels, False, batch_size),
             "fast": lambda: batched(img, aud, frames, mels, True, batch_size)}
    if naive_mode:
        modes = {"naive": lambda: naive(img, aud, frames, mels), **modes}
    # warm-up (cuDNN algorithm choice, allocator) on a small slice
    for mode in ("exact", "fast"):
        batched(img, aud, frames[:2], mels[:1], mode == "fast", batch_size)
    if naive_mode:
        naive(img, aud, frames[:len(frames) // len(mels)], mels[:1])
    times: dict[str, list[float]] = {m: [] for m in modes}
    results: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    summary: dict = {}
    for _ in range(reps):
        for mode, fn in modes.items():
            sync(device)
            t0 = time.perf_counter()
            results[mode] = fn()
            sync(device)
            times[mode].append(time.perf_counter() - t0)
        summary = _tokenize_summary(times, results, clips)
        if on_rep:
            on_rep(summary)
        if deadline is not None and deadline.passed():
            break
    return summary


def _tokenize_summary(times: dict[str, list[float]], results: dict, clips: int) -> dict:
    (fi, ai), (ei, ea) = results["fast"], results["exact"]
    out = {"clips": clips, "reps": len(times["exact"]), "times_s": times,
           "clips_per_s": {m: clips / statistics.median(ts) for m, ts in times.items()},
           "best_clips_per_s": {m: clips / min(ts) for m, ts in times.items()},
           "agreement": {"frames": (fi == ei).float().mean().item(), "mels": (ai == ea).float().mean().item()},
           "tokens": {"frames": fi.numel(), "mels": ai.numel()}, "distinct_frame_codes": len(torch.unique(ei))}
    if "naive" in results:
        out["naive_equals_exact"] = all(torch.equal(a, b) for a, b in zip(results["naive"], results["exact"],
                                                                          strict=True))
    return out


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
    ap.add_argument("--small", action="store_true", help="narrow VQGANs on small inputs (gpu_suite --tiny's)")
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

    img, aud = random_tokenizer("taming", device, 0, args.small), random_tokenizer("specvqgan", device, 1, args.small)
    chosen = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.fast_dtype]
    img.fast_dtype = aud.fast_dtype = chosen
    frames, mels = clip_inputs(clips, device, args.small)
    r = measure_tokenize(img, aud, frames, mels, bs, reps, naive_mode=not args.skip_naive)
    print(f"\n{'mode':6s} {'clips/s (median)':>17s} {'clips/s (best)':>15s}  seconds per rep")
    rate = r["clips_per_s"]
    for mode, ts in r["times_s"].items():
        print(f"{mode:6s} {rate[mode]:17.3f} {r['best_clips_per_s'][mode]:15.3f}  {', '.join(f'{t:.1f}' for t in ts)}")
    if "naive" in rate:
        print(f"\nexact / naive = {rate['exact'] / rate['naive']:.2f}x, fast / naive = "
              f"{rate['fast'] / rate['naive']:.2f}x; naive and exact indices identical: {r['naive_equals_exact']}")
    print(f"fast / exact = {rate['fast'] / rate['exact']:.2f}x")
    print(f"fast-mode index agreement with exact: frames {r['agreement']['frames']:.4%}, "
          f"mels {r['agreement']['mels']:.4%} ({r['tokens']['frames']} + {r['tokens']['mels']} tokens; "
          f"{r['distinct_frame_codes']} distinct frame codes)")
    if args.explore:
        explore(img, frames[:bs], device)


if __name__ == "__main__":
    main()
