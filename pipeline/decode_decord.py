"""decord backend: frames via decord's VideoReader (resized by decord), audio via the PyAV path.

decord picks frames by index; we map target times to indices with its per-frame timestamps, so
the choice is still by timestamp (variable frame rate included). decord cannot open truncated
files and bundles its own FFmpeg 4.1. Its frame indices do not match its timestamps in MPEG-TS
(it drops the frames before its first keyframe) nor in mp4s with an edit list (stream-copied cuts:
hidden frames get negative timestamps but no index), so those files are decoded by the pyav
backend instead, with a warning saying so (tests/test_decode.py checks all three agree).
"""

from __future__ import annotations

import numpy as np

from .decode_pyav import decode_pyav
from .decoded import (
    DecodedClip,
    DecodeError,
    center_crop,
    error_text,
    finish_clip,
    pick_indices,
    probe,
    scaled_size,
    target_times,
)


def decode_decord(path: str, start_s: float = 0.0, *, strict: bool = False, threads: int = 1) -> DecodedClip:
    """See `avtok.pipeline.decode.decode`."""
    import decord

    p = probe(path)
    width, height, fps, duration = p.width, p.height, p.fps, p.duration
    if "mpegts" in p.format:
        return _by_pyav(path, start_s, strict, threads, "MPEG-TS")
    w, h = scaled_size(width, height)
    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), width=w, height=h, num_threads=threads)
    except Exception as exc:  # decord raises DECORDError/RuntimeError for anything it cannot read
        raise DecodeError(f"decord cannot open: {error_text(exc)}",
                          stage="open", kind="open-failed") from exc
    n = len(vr)
    warnings: list[str] = []
    frames: list[np.ndarray] = []
    if n:
        stamps = vr.get_frame_timestamp(np.arange(n))  # [n, 2]: start, end seconds
        if stamps[0, 0] < 0:
            del vr
            return _by_pyav(path, start_s, strict, threads, "an edit list (hidden leading frames)")
        targets = [t for t in target_times(start_s) if t < stamps[-1, 1]]
        if targets:
            idx = pick_indices(stamps[:, 0], targets)
            try:
                batch = vr.get_batch(idx).asnumpy()
            except Exception as exc:
                raise DecodeError(f"decord failed to decode: {error_text(exc)}",
                                  stage="video", kind="decode-failed") from exc
            frames = [center_crop(f) for f in batch]
    del vr
    audio_clip = decode_pyav(path, start_s, video=False)
    warnings += audio_clip.warnings
    audio = audio_clip.audio
    return finish_clip(frames, audio, strict=strict, warnings=warnings, fps=fps, duration=duration,
                       frames_decoded=n, had_audio=audio_clip.had_audio, backend="decord")


def _by_pyav(path: str, start_s: float, strict: bool, threads: int, why: str) -> DecodedClip:
    clip = decode_pyav(path, start_s, strict=strict, threads=threads)
    clip.warnings.insert(0, f"decord misplaces frames in files with {why}: decoded with pyav")
    clip.backend = "decord"
    return clip
