"""Locating the ffmpeg binary: `AVTOK_FFMPEG`, then PATH, then the one the imageio-ffmpeg wheel ships."""

from __future__ import annotations

import functools
import os
import shutil


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary avtok runs (for the `ffmpeg` backend, tests and benchmarks)."""
    override = os.environ.get("AVTOK_FFMPEG")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise FileNotFoundError(f"AVTOK_FFMPEG={override!r} is not an executable file")
        return override
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    import imageio_ffmpeg  # ships a static ffmpeg inside the wheel

    return imageio_ffmpeg.get_ffmpeg_exe()
