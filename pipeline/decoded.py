"""What every decoding backend returns, and the helpers they share (`decode.decode` picks the backend).

A `DecodedClip` holds: 10 RGB frames, frame i = the frame *shown* at
`start_s + (i + 0.5)` s (the last frame whose timestamp is ≤ that time, chosen by timestamp so
variable-frame-rate video is sampled evenly), short side resized to 256 then centre-cropped to
256×256; and 10 s of 22050 Hz mono float32 audio with ffmpeg's (libswresample) downmix.
Clips shorter than 10 s or without audio are padded (last frame repeated / silence) and the fact
is written to `warnings`; with `strict=True` those cases raise `DecodeError` instead. A file with
no decodable video frame is always an error.

Backends: `pyav` (default; in-process, forward decode), `decord` (frames; audio via pyav),
`ffmpeg` (ffmpeg-python driving the ffmpeg binary; two processes per clip).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from avtok.model.geometry import CLIP_SECONDS, FRAME_SIZE, N_FRAMES, N_SAMPLES, SAMPLE_RATE


class DecodeError(Exception):
    """A video that cannot give a sample. `stage` is where it failed ("open", "video", "audio", "strict"),
    `kind` a short machine-readable reason (e.g. "no-video-stream", "no-decodable-video")."""

    def __init__(self, message: str, *, stage: str = "decode", kind: str = "decode-error"):
        super().__init__(message)
        self.stage, self.kind = stage, kind


@dataclass
class DecodedClip:
    frames: np.ndarray  # uint8 [10, 256, 256, 3]
    audio: np.ndarray  # float32 [220500], 22050 Hz mono
    fps: float  # average frame rate the container reports (0 if unknown)
    duration: float  # container duration in seconds (metadata; may lie on truncated files)
    frames_decoded: int  # video frames actually decoded (the backend's own count)
    audio_samples: int  # real audio samples (22050 Hz) before padding/truncation
    had_audio: bool  # the file has an audio stream that gave at least one sample
    warnings: list[str] = field(default_factory=list)
    backend: str = "pyav"


_NOISE = re.compile(r"\[Errno -?\d+\] |\[\d\d:\d\d:\d\d\] \S+:\d+: ")


def error_text(exc: BaseException, limit: int = 300) -> str:
    """A one-line, readable message for a decoder exception (drops errno codes and source locations)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = _NOISE.sub("", text)
    return f"{type(exc).__name__}: {text}"[:limit]


@dataclass
class Probe:
    """What the container header says (may lie on truncated files)."""

    width: int
    height: int
    fps: float
    duration: float
    has_audio: bool
    start: float  # container start time in seconds (non-zero for some mpeg-ts/webm files)
    format: str = ""  # demuxer name(s), e.g. "mpegts" or "mov,mp4,m4a,3gp,3g2,mj2"


def probe(path: str) -> Probe:
    """Read the container header with PyAV; DecodeError if it cannot be opened or has no video stream."""
    import av

    try:
        with av.open(path, metadata_errors="ignore") as c:
            if not c.streams.video:
                raise DecodeError("no video stream", stage="open", kind="no-video-stream")
            vs = c.streams.video[0]
            return Probe(width=vs.width, height=vs.height, fps=float(vs.average_rate or vs.guessed_rate or 0),
                         duration=(c.duration or 0) / 1e6, has_audio=bool(c.streams.audio),
                         start=max(c.start_time or 0, 0) / 1e6, format=c.format.name)
    except (av.FFmpegError, OSError) as exc:
        raise DecodeError(f"cannot open: {error_text(exc)}", stage="open", kind="open-failed") from exc


def seek_point(container, t0: float, base: float) -> tuple[float, float] | None:
    """(where to seek, where decoding will start), absolute seconds, so that decoding from the landing
    point covers `t0`; None: decode from the file start.

    Seeking lands on a keyframe at or before the asked time in indexed containers (mp4, mkv, webm),
    but in MPEG-TS it lands on a byte position, and decoding starts at the next keyframe, which may
    be after `t0`. So each candidate (t0, then 2, 10, 30 s earlier) is checked by demuxing a few
    packets: the first video keyframe and the first audio packet must not be later than `t0`.
    Leaves the container at an arbitrary position; the caller seeks again.
    """
    streams = [s for s in (container.streams.video[:1] + container.streams.audio[:1])]
    if not streams:
        return None
    for back in (0.0, 2.0, 10.0, 30.0):
        s = t0 - back
        if s <= base + 0.01:
            return None
        try:
            container.seek(int(s * 1e6), backward=True, any_frame=False)
        except Exception:  # av.FFmpegError: a file that cannot seek is decoded from the start
            return None
        first: dict[int, float] = {}
        try:
            for n, pkt in enumerate(container.demux(streams)):
                if n > 5000:
                    break
                if pkt.pts is None or (pkt.stream.type == "video" and not pkt.is_keyframe):
                    continue
                first.setdefault(pkt.stream.index, float(pkt.pts * pkt.stream.time_base))
                if len(first) == len(streams):
                    break
        except Exception:  # a demuxer error after the seek: decode from the start instead
            return None
        if len(first) == len(streams) and max(first.values()) <= t0 + 1e-6:
            return s, min(first.values())
    return None


def target_times(start_s: float) -> list[float]:
    """Times (s) of the frames to pick: start_s + i + 0.5 for i = 0..9."""
    return [start_s + (i + 0.5) * CLIP_SECONDS / N_FRAMES for i in range(N_FRAMES)]


def scaled_size(width: int, height: int, short: int = FRAME_SIZE) -> tuple[int, int]:
    """(w, h) with the short side = `short` and the aspect ratio kept (the long side rounded, ≥ short)."""
    if width <= height:
        return short, max(short, round(height * short / width))
    return max(short, round(width * short / height)), short


def center_crop(img: np.ndarray, size: int = FRAME_SIZE) -> np.ndarray:
    """Centre crop an [H, W, 3] image whose short side is `size` to [size, size, 3]."""
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[top:top + size, left:left + size])


def pick_indices(times: list[float] | np.ndarray, targets: list[float]) -> list[int]:
    """For each target time, the index of the frame shown then: the last frame with time ≤ target
    (the first frame if the target precedes every frame). `times` must be sorted."""
    times = np.asarray(times, dtype=np.float64)
    idx = np.searchsorted(times, np.asarray(targets) + 1e-6, side="right") - 1
    return [int(max(i, 0)) for i in idx]


def finish_clip(frames: list[np.ndarray], audio: np.ndarray | None, *, strict: bool, warnings: list[str],
                fps: float, duration: float, frames_decoded: int, had_audio: bool, backend: str) -> DecodedClip:
    """Pad frames/audio to full length (or raise under strict) and build the DecodedClip."""
    if not frames:
        raise DecodeError("no decodable video frame", stage="video", kind="no-decodable-video")
    if len(frames) < N_FRAMES:
        msg = f"video ends before frame {len(frames)} of {N_FRAMES}: repeated the last frame"
        if strict:
            raise DecodeError(msg, stage="strict", kind="short-video")
        warnings.append(msg)
        frames = frames + [frames[-1]] * (N_FRAMES - len(frames))
    n_real = 0 if audio is None else int(audio.shape[0])
    if audio is None or not had_audio:
        msg = "no audio stream: silence" if audio is None else "audio stream gave no samples: silence"
        if strict:
            raise DecodeError(msg, stage="strict", kind="no-audio")
        warnings.append(msg)
        audio = np.zeros(N_SAMPLES, np.float32)
    elif n_real < N_SAMPLES:
        msg = f"audio is {n_real / SAMPLE_RATE:.2f} s < {CLIP_SECONDS:.0f} s: zero-padded"
        # a few ms short is the codec's frame granularity, not a short clip
        if N_SAMPLES - n_real > SAMPLE_RATE // 20:
            if strict:
                raise DecodeError(msg, stage="strict", kind="short-audio")
            warnings.append(msg)
        audio = np.concatenate([audio, np.zeros(N_SAMPLES - n_real, np.float32)])
    else:
        audio = audio[:N_SAMPLES]
    return DecodedClip(frames=np.stack(frames), audio=np.ascontiguousarray(audio, dtype=np.float32), fps=fps,
                       duration=duration, frames_decoded=frames_decoded, audio_samples=min(n_real, N_SAMPLES),
                       had_audio=had_audio, warnings=warnings, backend=backend)
