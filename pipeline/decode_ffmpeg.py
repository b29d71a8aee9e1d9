"""ffmpeg backend: ffmpeg-python drives the ffmpeg binary (`ffmpeg_exe()`), one process per clip.

Frame choice by timestamp inside ffmpeg: timestamps are kept as in the file (`-copyts`) and shifted
so target i lands on integer tick i, and the `fps=1` filter with `round=up` emits, at tick i, the
last frame whose timestamp is ≤ the target (ceil(t') ≤ i ⇔ t' ≤ i). For a window that does not start
at 0, the input is seeked first (`-ss` before `-i`, `-noaccurate_seek`: decoding starts at the
keyframe `decoded.seek_point` checked to be at or before the window, and every frame from there on
keeps its own timestamp). Video goes to stdout as raw RGB; audio (`-ac 1 -ar 22050`, ffmpeg's own
downmix) goes to a temporary file in the same run. `frames_decoded` is ffmpeg's own count of
decoded video frames (its verbose end-of-run statistics). The container is probed in process with
PyAV (there is no ffprobe everywhere). The most tolerant backend, and the slowest (process start-up).
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np
from avtok.model.geometry import CLIP_SECONDS, FRAME_SIZE, N_FRAMES, SAMPLE_RATE

from .decoded import DecodedClip, DecodeError, finish_clip, probe, scaled_size, seek_point
from .ffmpeg import ffmpeg_exe

# "[in#0/mov,mp4,... @ 0x..] [verbose]   Input stream #0:0 (video): 17 packets read (67237 bytes); 6 frames decoded;"
_DECODED = re.compile(r"Input stream #\d+:\d+ \(video\): \d+ packets read \(\d+ bytes\); (\d+) frames decoded")
_PROBLEM = re.compile(r"\[(error|fatal|panic)\] ")


def _seek_to(path: str, start_s: float, base: float) -> tuple[float, float] | None:
    """(seconds after the container start to give `-ss`, seconds of the window after the landing
    keyframe), or None: decode from the start."""
    if start_s <= 0:
        return None
    import av

    try:
        with av.open(path, metadata_errors="ignore") as c:
            found = seek_point(c, base + start_s, base)
    except (av.FFmpegError, OSError):
        return None
    return None if found is None else (max(found[0] - base, 0.0), base + start_s - found[1])


def decode_ffmpeg(path: str, start_s: float = 0.0, *, strict: bool = False, threads: int = 1) -> DecodedClip:
    """See `avtok.pipeline.decode.decode`."""
    import ffmpeg

    p = probe(path)
    width, height, fps, duration, has_audio, base = p.width, p.height, p.fps, p.duration, p.has_audio, p.start
    w, h = scaled_size(width, height)
    half = 0.5 * CLIP_SECONDS / N_FRAMES
    # -copyts: timestamps stay those of the file (absolute), with or without a seek, hence the container start
    shift = base + start_s + half
    seek = _seek_to(path, start_s, base)
    # -t (counted from where decoding starts) stops reading once the window is covered; without it
    # ffmpeg demuxes and decodes to the end of the file
    lead = start_s if seek is None else seek[1]
    in_args = {"threads": threads, "copyts": None, "t": f"{lead + CLIP_SECONDS + 1.0:.6f}"}
    if seek is not None:
        in_args.update(ss=f"{seek[0]:.6f}", noaccurate_seek=None)
    inp = ffmpeg.input(path, **in_args)
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
        proc = ffmpeg.merge_outputs(*outputs).global_args("-nostdin", "-loglevel", "level+verbose").overwrite_output()
        out, err = proc.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True, quiet=True)
        failed = False
    except ffmpeg.Error as exc:
        out, err, failed = exc.stdout or b"", exc.stderr or b"", True
    try:
        audio = np.fromfile(tmp, dtype="<f4") if tmp else None
    finally:
        if tmp:
            os.unlink(tmp)
    text = err.decode(errors="replace")
    problems = [_PROBLEM.sub("", line).strip() for line in text.splitlines() if _PROBLEM.search(line)]
    counted = _DECODED.search(text)
    frame_bytes = FRAME_SIZE * FRAME_SIZE * 3
    n = len(out) // frame_bytes
    frames = list(np.frombuffer(out[: n * frame_bytes], np.uint8).reshape(n, FRAME_SIZE, FRAME_SIZE, 3).copy())
    rc_msg = (problems or ["ffmpeg failed"])[-1] if failed else None
    if rc_msg and not frames:
        raise DecodeError(f"ffmpeg: {rc_msg}", stage="video", kind="no-decodable-video")
    warnings: list[str] = []
    if rc_msg or problems:
        warnings.append(f"ffmpeg reported: {(rc_msg or problems[-1])[:200]}")
    had_audio = audio is not None and audio.shape[0] > 0
    return finish_clip(frames, audio, strict=strict, warnings=warnings, fps=fps, duration=duration,
                       frames_decoded=int(counted.group(1)) if counted else n, had_audio=had_audio,
                       backend="ffmpeg")
