"""Read tokenizer weights from Lightning `.ckpt`, plain state dicts or safetensors, without running code.

`torch.load(weights_only=True)` is tried first. Lightning 1.x checkpoints (the published taming and
SpecVQGAN files) also pickle callback objects, hyper-parameter namespaces and numpy scalars, which
the weights-only loader refuses; those are read with `RestrictedUnpickler`: tensors, containers and
numpy scalars are rebuilt, any other class becomes an inert `Placeholder` (nothing is imported, no
constructor runs), and globals that only exist to run code (os.system, builtins.eval, subprocess, ...)
make the load fail with `UnsafeCheckpointError`.
"""

from __future__ import annotations

import codecs
import collections
import functools
import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch

LOSS_PREFIX = "loss."
FIRST_STAGE_PREFIX = "first_stage_model."


class CheckpointLoadError(ValueError):
    """A weights file that cannot be used as a tokenizer; the message says why."""


class UnsafeCheckpointError(CheckpointLoadError):
    """The pickle asks for a global whose only use is running code."""


class Placeholder:
    """Stands in for an object of a class that is not (and must not be) imported. Stores what it got."""

    _avtok_qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        # NEWOBJ calls __new__ without __init__, so the fields are set here.
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items = args, kwargs, None, {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.items[len(self.items)] = value

    def extend(self, values: Any) -> None:
        for v in values:
            self.append(v)

    def __repr__(self) -> str:
        return f"<placeholder for {self._avtok_qualname}>"


@functools.cache
def _placeholder_class(module: str, name: str) -> type:
    return type(name, (Placeholder,), {"_avtok_qualname": f"{module}.{name}", "__module__": "avtok.placeholder"})


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor without calling arbitrary constructors."""
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls()
    if cls is base and base in (object, dict, list, set, tuple):
        return base() if state is None else base(state)
    raise UnsafeCheckpointError(f"refusing to rebuild {cls!r} from {base!r} via copyreg._reconstructor")


# Modules whose globals are only ever pickled to execute something: refuse instead of stubbing.
_DANGEROUS_MODULES = {
    "os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy", "pickle", "_pickle",
    "marshal", "socket", "ctypes", "code", "codeop", "pty", "webbrowser", "multiprocessing", "signal",
    "asyncio", "pdb", "commands", "popen2", "platform", "sysconfig", "shelve", "tempfile", "io", "_io",
    "operator", "functools", "types", "inspect", "ast",
}
_SAFE_BUILTINS = {"set", "frozenset", "slice", "complex", "bytearray", "bytes", "str", "int", "float",
                  "bool", "list", "dict", "tuple", "range", "object"}


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import builtins

    import numpy as np

    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        # protocol 2 pickles bytes (e.g. inside numpy scalars) as _codecs.encode(str, "latin1")
        ("_codecs", "encode"): codecs.encode,
        ("collections", "defaultdict"): collections.defaultdict,
        ("copyreg", "_reconstructor"): _safe_reconstructor,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for name in _SAFE_BUILTINS:
        allowed[("builtins", name)] = allowed[("__builtin__", name)] = getattr(builtins, name)
    # numpy scalars / arrays pickle through numpy.core (numpy 1) or numpy._core (numpy 2).
    import importlib

    multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = multiarray.scalar
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
    for name in dir(torch):  # dtypes are pickled as globals, e.g. torch.float32
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[("torch", name)] = getattr(torch, name)
    return allowed


_ALLOWED: dict[tuple[str, str], Any] | None = None


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors and plain data; everything else becomes a Placeholder or is refused."""

    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed_globals()
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "__builtin__":  # protocol-2 spelling
            module = "builtins"
        root = module.split(".", 1)[0]
        if root in _DANGEROUS_MODULES or root in ("builtins", "__builtin__"):
            raise UnsafeCheckpointError(
                f"the checkpoint refers to {module}.{name}, which can only be used to run code; "
                "refusing to load it (a checkpoint must be data, not a program)")
        return _placeholder_class(module, name)


class _RestrictedPickleModule:
    """The `pickle_module` handed to torch.load."""

    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()


def load_pickled(path: str | os.PathLike) -> Any:
    """torch.load with weights_only=True, falling back to the restricted unpickler for foreign classes."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # e.g. "Unsupported global: pytorch_lightning...": read it with placeholders instead
    except (RuntimeError, EOFError, OSError) as e:
        if isinstance(e, OSError) or "zip" not in str(e).lower():
            raise CheckpointLoadError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except Exception as e:
        raise CheckpointLoadError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights inside a loaded checkpoint: Lightning `state_dict` or a plain dict of tensors,
    without `loss.*` keys and with a `first_stage_model.` prefix stripped (transformer checkpoints)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointLoadError(f"{source}: holds no state_dict (got {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointLoadError(f"{source}: holds no tensors")
    if any(k.startswith(FIRST_STAGE_PREFIX) for k in tensors):
        tensors = {k[len(FIRST_STAGE_PREFIX):]: v for k, v in tensors.items() if k.startswith(FIRST_STAGE_PREFIX)}
    return {k: v for k, v in tensors.items() if not k.startswith(LOSS_PREFIX)}


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights of a tokenizer file (.ckpt/.pt/.pth pickle or .safetensors), ready for load_state_dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointLoadError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return extract_state_dict(load_file(str(path)), str(path))
    return extract_state_dict(load_pickled(path), str(path))



def weights_fingerprint(tensors: dict[str, torch.Tensor], extra: str = "") -> str:
    """sha256 over sorted (name, dtype, shape, bytes): stable across file formats and wrappers."""
    h = hashlib.sha256(extra.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{str(t.dtype)}|{tuple(tensors[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
