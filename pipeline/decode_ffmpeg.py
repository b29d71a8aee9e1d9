"""ffmpeg backend: ffmpeg-python drives the ffmpeg binary (`ffmpeg_exe()`), one process per clip.

Frame choice by timestamp inside ffmpeg: timestamps are shifted so target i lands on integer
tick i, and the `fps=1` filter with `round=up` emits, at tick i, the last frame whose timestamp is
≤ the target (ceil(t') ≤ i ⇔ t' ≤ i). Video goes to stdout as raw RGB; audio (`-ac 1 -ar 22050`,
ffmpeg's own downmix) goes to a temporary file in the same run. The container is probed in
process with PyAV (there is no ffprobe everywhere). The most tolerant backend, and the slowest
(process start-up, facts/pipeline.md §2.2).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from avtok.model.geometry import CLIP_SECONDS, FRAME_SIZE, N_FRAMES, SAMPLE_RATE

from .decoded import DecodedClip, DecodeError, finish_clip, probe, scaled_size
from .ffmpeg import ffmpeg_exe


def decode_ffmpeg(path: str, start_s: float = 0.0, *, strict: bool = False, threads: int = 1) -> DecodedClip:
    """See `avtok.pipeline.decode.decode`."""
    import ffmpeg

    p = probe(path)
    width, height, fps, duration, has_audio, base = p.width, p.height, p.fps, p.duration, p.has_audio, p.start
    w, h = scaled_size(width, height)
    half = 0.5 * CLIP_SECONDS / N_FRAMES
    # No input seek (-ss before -i would rebase timestamps at a keyframe); `trim` drops what precedes
    # the window after decoding instead. Timestamps are absolute here, hence the container start.
    shift = base + start_s + half
    inp = ffmpeg.input(path, threads=threads)
    v = (inp.video
         .filter("setpts", f"PTS-{shift:.6f}/TB")
         .filter("fps", fps=1, start_time=0, round="up", eof_action="pass")
         .filter("trim", end_frame=N_FRAMES)
         .filter("scale", w, h, flags="area")
         .filter("crop", FRAME_SIZE, FRAME_SIZE)
         .output("pipe:", format="rawvideo", pix_fmt="rgb24"))
    outputs = [v]
    tmp = None
    if has_audio:
        fd, tmp = tempfile.mkstemp(suffix=".f32")
        os.close(fd)
        a = (inp.audio
             .filter("atrim", start=base + start_s, duration=CLIP_SECONDS)
             .output(tmp, format="f32le", ac=1, ar=SAMPLE_RATE))
        outputs.append(a)
    try:
        proc = ffmpeg.merge_outputs(*outputs).global_args("-nostdin", "-loglevel", "error").overwrite_output()
        out, err = proc.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True, quiet=True)
        rc_msg = None
    except ffmpeg.Error as exc:
        out, err = exc.stdout or b"", exc.stderr or b""
        rc_msg = (err.decode(errors="replace").strip().splitlines() or ["ffmpeg failed"])[-1]
    try:
        audio = np.fromfile(tmp, dtype="<f4") if tmp else None
    finally:
        if tmp:
            os.unlink(tmp)
    frame_bytes = FRAME_SIZE * FRAME_SIZE * 3
    n = len(out) // frame_bytes
    frames = list(np.frombuffer(out[: n * frame_bytes], np.uint8).reshape(n, FRAME_SIZE, FRAME_SIZE, 3).copy())
    warnings: list[str] = []
    text = err.decode(errors="replace").strip()
    if rc_msg and not frames:
        raise DecodeError(f"ffmpeg: {rc_msg}", stage="video", kind="no-decodable-video")
    if rc_msg or text:
        warnings.append(f"ffmpeg reported: {(rc_msg or text.splitlines()[-1])[:200]}")
    had_audio = audio is not None and audio.shape[0] > 0
    return finish_clip(frames, audio, strict=strict, warnings=warnings, fps=fps, duration=duration,
                       frames_decoded=n, had_audio=had_audio, backend="ffmpeg")
