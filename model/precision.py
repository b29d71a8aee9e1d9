"""Which device and number format a run uses: one resolver for train, generate, eval and bench/.

"auto" precision: bf16 on GPUs of compute capability 8 or newer (A100, H100, H200, L40S, RTX 30/40),
fp16 on older ones (V100, T4; training adds a GradScaler), fp32 on CPU. Capability, not
`torch.cuda.is_bf16_supported()`: that reports the emulated, slow bf16 of a V100 (sm70) as supported.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Dense bf16/fp16 tensor-core peaks (TFLOP/s) for the MFU figure, matched on the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "V100": 125.0, "L40S": 362.0, "A10G": 70.0,
               "RTX 4090": 165.0, "RTX 3090": 71.0}


class DeviceError(ValueError):
    """A device or precision name this machine cannot use; the message says which and why."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" = this process's GPU (cuda:LOCAL_RANK) if torch sees one, else the CPU; "cuda" = cuda:LOCAL_RANK."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} asked for, but torch sees no CUDA GPU here")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
        if dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) visible")
    elif dev.type not in ("cpu", "mps"):
        raise DeviceError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype for a precision name on `device` (see the module docstring for "auto")."""
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    if name not in DTYPES:
        raise DeviceError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return DTYPES[name]


def autocast(dtype: torch.dtype, device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed-precision context for `dtype` (a no-op for fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> "bf16" (the names the CLI and the checkpoints use)."""
    return {v: k for k, v in DTYPES.items()}[dtype]


def peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s for MFU: the override, else the table entry matching the GPU's name, else None."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tf in PEAK_TFLOPS.items():
            if key in name:
                return tf * 1e12
    return None
