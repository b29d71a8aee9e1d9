"""Measuring helpers shared by the bench scripts and bench/gpu_suite.py: device sync and name, the peak
FLOP/s an MFU figure divides by, peak memory, and the deadline a time-budgeted measurement checks."""

from __future__ import annotations

import resource
import time

import torch
from avtok.model.precision import peak_flops, resolve_precision

__all__ = ["Deadline", "cpu_matmul_peak", "demo_model_sizes", "device_name", "gpu_matmul_peak", "peak_flops_for",
           "peak_memory", "reset_peak_memory", "resolve_precision", "sync"]


def demo_model_sizes() -> dict:
    """AVConfig overrides of the demo's model on top of the `tiny` preset, codebook sizes included."""
    from avtok.pipeline.demo import DemoOptions

    o = DemoOptions()
    return {**o.model_overrides, "image_codebook": o.image_codebook, "audio_codebook": o.audio_codebook}


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that a host clock read after it covers that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'' if n == 1 else 's'})"


def cpu_matmul_peak(n: int = 1024, reps: int = 10) -> float:
    """Achieved fp32 matmul FLOP/s on this CPU (the practical peak for CPU MFU)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def gpu_matmul_peak(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """Achieved dense bf16 matmul FLOP/s on random data (zeros run faster than real data), timed by
    CUDA events after 3 warm-ups: the measured ceiling beside the datasheet one."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    end.synchronize()
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3)


def peak_flops_for(device: torch.device, override_tflops: float | None = None) -> float | None:
    """FLOP/s for MFU: the override, else the datasheet dense bf16/fp16 peak of a known GPU (matched on
    its name, as avtok train does), else on CPU the measured fp32 matmul rate; None for unknown GPUs."""
    if device.type == "cuda" or override_tflops:
        return peak_flops(device, override_tflops)
    return cpu_matmul_peak()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float]:
    """GiB: CUDA allocated and reserved peaks since the last reset (reserved is what the card must hold,
    besides the context); on CPU the process's max RSS (never reset: an upper bound)."""
    if device.type == "cuda":
        return {"peak_alloc_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30}
    return {"max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


class Deadline:
    """A wall-clock instant (time.time()) after which a measurement stops repeating and reports what it
    has; None never passes. Checked between repetitions, never inside one."""

    def __init__(self, at: float | None = None) -> None:
        self.at = at

    def passed(self) -> bool:
        return self.at is not None and time.time() >= self.at

    def left(self) -> float:
        return float("inf") if self.at is None else self.at - time.time()
