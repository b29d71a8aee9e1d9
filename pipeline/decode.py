"""One decoding interface over three backends: `decode(path, start_s, backend=...) -> DecodedClip`.

Backends: `pyav` (default; in-process, forward decode), `decord` (frames; audio via pyav),
`ffmpeg` (ffmpeg-python driving the ffmpeg binary; two processes per clip). What they return is
described in `decoded.py`.
"""

from __future__ import annotations

from .decoded import DecodedClip

BACKENDS = ("pyav", "decord", "ffmpeg")


def decode(path: str, start_s: float = 0.0, backend: str = "pyav", *, strict: bool = False,
           threads: int = 1) -> DecodedClip:
    """Decode the 10 s window at `start_s` of `path` into frames + audio (see module docstring).

    Raises DecodeError for unusable files (and, with strict, for padded ones); other exceptions
    only for programming errors.
    """
    # imported on use: decord is an optional wheel and each backend pulls in its own libraries
    if backend == "pyav":
        from .decode_pyav import decode_pyav as impl
    elif backend == "decord":
        from .decode_decord import decode_decord as impl
    elif backend == "ffmpeg":
        from .decode_ffmpeg import decode_ffmpeg as impl
    else:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return impl(str(path), float(start_s), strict=strict, threads=threads)
