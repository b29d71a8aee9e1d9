"""Click parameter types shared by every command, so a bad value stops at parsing with one `Error:` line
naming the option, before any work starts or any file is touched.

Numbers: `FINITE`, `NON_NEGATIVE`, `POSITIVE`, `UNIT` (finite floats), `finite(min, max)`, `POS_INT`,
`NON_NEG_INT`, `SEED`; `FloatList` (comma-separated finite numbers). Paths: `EXISTING_FILE`,
`EXISTING_DIR` (must exist), `OUT_DIR`, `OUT_FILE` (may not exist yet, but must be creatable: no part of
the path is a regular file, the nearest existing folder is writable). `Device` (cpu, cuda, cuda:N, mps,
checked against what torch sees).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import click


class FiniteFloat(click.FloatRange):
    """A float that is not nan/inf, optionally within [min, max] (or (min, max] with `open_min`).

    click's FloatRange alone lets nan through (every comparison with nan is false) and inf where
    there is no max; `--help` shows the range as FloatRange does.
    """

    def __init__(self, min: float | None = None, max: float | None = None, open_min: bool = False):
        super().__init__(min=min, max=max, min_open=open_min)
        self.open_min = open_min

    def convert(self, value: Any, param, ctx) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(x, param, ctx)

    def _describe_range(self) -> str:
        return "finite" if self.min is None and self.max is None else f"{super()._describe_range()}, finite"


def finite(min: float | None = None, max: float | None = None, open_min: bool = False) -> FiniteFloat:
    """A finite float in [min, max] (`open_min`: strictly above min)."""
    return FiniteFloat(min, max, open_min)


FINITE = FiniteFloat()
NON_NEGATIVE = FiniteFloat(0.0)
POSITIVE = FiniteFloat(0.0, open_min=True)
UNIT = FiniteFloat(0.0, 1.0)
POS_INT = click.IntRange(min=1)
NON_NEG_INT = click.IntRange(min=0)
SEED = click.IntRange(0, 2**63 - 1)
TOP_P = FiniteFloat(0.0, 1.0, open_min=True)  # the sampler's nucleus
TOKEN_TEMPERATURE = FiniteFloat(0.0, open_min=True)  # the sampler's temperature of conditioned draws
JOINT_ORDER = click.Choice(["together", "image-first"])  # avtok.model.sampler.JOINT_ORDERS
CFG_SCHEDULE = click.Choice(["constant", "linear"])  # avtok.model.sampler.CFG_SCHEDULES
CONFIDENCE = click.Choice(["guided", "conditional"])  # avtok.model.sampler.CONFIDENCES


class FloatList(click.ParamType):
    """A comma-separated list of finite numbers ("0,1,2.5"). Checked only: the text is passed on as given."""

    name = "list"

    def __init__(self, min: float | None = None):
        self.item = FiniteFloat(min)

    def convert(self, value: Any, param, ctx) -> str:
        items = [x for x in str(value).split(",") if x.strip()]
        if not items:
            self.fail(f"{value!r} holds no number", param, ctx)
        for x in items:
            try:
                self.item.convert(x.strip(), param, ctx)
            except click.BadParameter as exc:
                self.fail(f"{value!r}: {exc.message}", param, ctx)
        return str(value)


def _blocking_file(path: Path) -> Path | None:
    """The first existing ancestor of `path` that is not a folder (so nothing can be created under it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
        if parent.is_symlink():  # a dangling link: it cannot be a folder either
            return parent
    return None


def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")


class OutPath(click.ParamType):
    """An output path that may not exist yet but can be made: a folder (`dir=True`) or a file.

    Refused at parse time: a path under a regular file, an existing path of the other kind, and a
    path whose nearest existing folder this user cannot write to. Returns a str (as click.Path does).
    """

    def __init__(self, dir: bool):
        self.dir = dir
        self.name = "directory" if dir else "file"

    def convert(self, value: Any, param, ctx) -> str:
        text = os.fspath(value)
        if not text or "\x00" in text:
            self.fail(f"{text!r} is not a usable path", param, ctx)
        path = Path(text).expanduser()
        blocker = _blocking_file(path)
        if blocker is not None:
            self.fail(f"{text!r}: {blocker} is a file, not a folder", param, ctx)
        if path.exists():
            if self.dir and not path.is_dir():
                self.fail(f"{text!r} is a file, not a folder", param, ctx)
            if not self.dir and path.is_dir():
                self.fail(f"{text!r} is a folder, not a file", param, ctx)
        target = _nearest_existing(path if self.dir else path.parent)
        if not os.access(target, os.W_OK | os.X_OK):
            self.fail(f"{text!r}: {target} is not writable", param, ctx)
        return text


OUT_DIR = OutPath(dir=True)
OUT_FILE = OutPath(dir=False)
EXISTING_FILE = click.Path(exists=True, dir_okay=False)
EXISTING_DIR = click.Path(exists=True, file_okay=False)

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


class Device(click.ParamType):
    """A torch device name that this machine has: cpu, cuda, cuda:N (N < the GPU count; not with
    indexed=False), mps (not with mps=False); `auto` and other extra words only where the command
    lists them in `extra`."""

    name = "device"

    def __init__(self, extra: tuple[str, ...] = (), indexed: bool = True, mps: bool = True):
        self.extra, self.indexed, self.mps = extra, indexed, mps

    def convert(self, value: Any, param, ctx) -> str:
        text = str(value).strip().lower()
        if text in self.extra:
            return text
        if not _DEVICE.match(text) or (":" in text and not self.indexed) or (text == "mps" and not self.mps):
            allowed = ", ".join([*self.extra, "cpu", "cuda", *(["cuda:N"] if self.indexed else []),
                                 *(["mps"] if self.mps else [])])
            self.fail(f"{value!r} is not a device (one of {allowed})", param, ctx)
        if text == "cpu":
            return text
        import torch

        if text.startswith("cuda"):
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = int(text.partition(":")[2] or 0)
            if index >= count:
                have = f"{count} CUDA device(s)" if count else "no CUDA device"
                self.fail(f"{value!r}: torch sees {have}", param, ctx)
        elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            self.fail(f"{value!r}: torch sees no MPS device", param, ctx)
        return text
