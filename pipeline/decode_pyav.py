"""PyAV backend: one forward pass over the demuxed packets, both streams, no per-frame seek.

Clips re-encoded by x264 often have one keyframe per 10 s, so seeking per target frame would
re-decode from the start each time (about 5× slower). We seek at most once (to a keyframe at or
before `start_s`, see `decoded.seek_point`), decode forward, keep only the frames shown at the target times, convert just those
with swscale (resize inside the conversion) and stop as soon as both streams cover the window.
Decoder errors are caught per packet so truncated or partly corrupt files yield what decodes.
"""

from __future__ import annotations

import av
import numpy as np
from avtok.model.geometry import CLIP_SECONDS, N_FRAMES, N_SAMPLES, SAMPLE_RATE

from .decoded import (
    DecodedClip,
    DecodeError,
    center_crop,
    error_text,
    finish_clip,
    scaled_size,
    seek_point,
    target_times,
)


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    # AREA is the closest swscale filter to an antialiased downscale; threads=1 because PyAV's
    # default (auto) builds a thread pool per frame, which costs more wall time than the scaling.
    w, h = scaled_size(frame.width, frame.height)
    return center_crop(frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA", threads=1))


class _AudioSink:
    """Resamples decoded audio to 22050 Hz mono float (swr downmix, like `ffmpeg -ac 1`) and keeps
    the samples of [start, start + 10 s) on the stream's own timeline."""

    def __init__(self, start: float):
        self.start = start
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self.chunks: list[np.ndarray] = []
        self.origin: float | None = None  # time of the first decoded sample
        self.n = 0

    def add(self, frame: av.AudioFrame | None) -> None:
        if frame is not None and self.origin is None:
            self.origin = float(frame.time) if frame.time is not None else self.start
        for out in self.resampler.resample(frame):
            arr = out.to_ndarray().reshape(-1)
            self.chunks.append(arr)
            self.n += arr.shape[0]

    def covered_until(self) -> float:
        return -1.0 if self.origin is None else self.origin + self.n / SAMPLE_RATE

    def samples(self) -> np.ndarray:
        self.add(None)  # flush the resampler
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        if self.origin is None:
            return audio
        offset = round((self.start - self.origin) * SAMPLE_RATE)
        if offset > 0:
            audio = audio[offset:]
        elif offset < 0:  # audio starts after the window does: silence until it does
            audio = np.concatenate([np.zeros(-offset, np.float32), audio])
        return audio[:N_SAMPLES].astype(np.float32, copy=False)


def decode_pyav(path: str, start_s: float = 0.0, *, strict: bool = False, threads: int = 1,
                video: bool = True) -> DecodedClip:
    """See `avtok.pipeline.decode.decode`. With video=False only the audio is decoded (frames empty)."""
    warnings: list[str] = []
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise DecodeError(f"cannot open: {error_text(exc)}", stage="open", kind="open-failed") from exc
    with container:
        vstreams, astreams = container.streams.video, container.streams.audio
        if video and not vstreams:
            raise DecodeError("no video stream", stage="open", kind="no-video-stream")
        vs = vstreams[0] if video else None
        as_ = astreams[0] if astreams else None
        if vs is not None:
            vs.thread_count = threads
        # Times are relative to the container start (mpeg-ts starts at ~1.4 s); priming offsets
        # (negative start) are left alone, as ffmpeg's -ss does.
        base = max(container.start_time or 0, 0) / 1e6
        t0 = start_s + base
        targets = target_times(t0)
        fps = float(vs.average_rate or vs.guessed_rate or 0) if vs is not None else 0.0
        duration = (container.duration or 0) / 1e6
        if not duration and vs is not None and vs.duration and vs.time_base:
            duration = float(vs.duration * vs.time_base)

        if start_s > 0:
            # one seek to a keyframe at or before the window (checked: see seek_point); demuxing goes
            # forward from there. Where no such point is found the file is decoded from its start.
            seek_to = seek_point(container, t0, base)
            try:
                container.seek(int(seek_to[0] * 1e6) if seek_to else 0, backward=True, any_frame=False)
            except av.FFmpegError as exc:
                warnings.append(f"seek to {start_s:.2f} s failed ({exc}); decoded from the start")

        picked: list[np.ndarray] = []
        prev: av.VideoFrame | None = None
        prev_t = -1.0
        n_decoded = 0
        sink = _AudioSink(t0) if as_ is not None else None
        bad_packets = 0
        video_done = vs is None
        audio_done = sink is None
        end_t = t0 + CLIP_SECONDS
        streams = [s for s in (vs, as_) if s is not None]
        demux = container.demux(streams)
        read_error: str | None = None
        while not (video_done and audio_done):
            try:
                packet = next(demux)
            except StopIteration:
                break
            except (av.FFmpegError, OSError) as exc:  # the demuxer itself gave up (truncated file)
                read_error = error_text(exc)
                break
            is_video = packet.stream is vs
            if (video_done and is_video) or (audio_done and not is_video):
                continue
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError):
                bad_packets += 1
                continue
            for frame in frames:
                if is_video:
                    n_decoded += 1
                    t = float(frame.time) if frame.time is not None else prev_t + (1.0 / fps if fps else 0.04)
                    # every target before this frame's time is showing the previous frame
                    while len(picked) < N_FRAMES and t > targets[len(picked)] + 1e-6:
                        picked.append(_to_rgb(prev if prev is not None else frame))
                    prev, prev_t = frame, t
                    if len(picked) == N_FRAMES:
                        video_done = True
                        break
                else:
                    sink.add(frame)
                    if sink.covered_until() >= end_t:
                        audio_done = True
        if not video_done and prev is not None:
            # end of stream: the last frame stays on screen for the remaining targets it covers,
            # but only while the stream actually lasts (a short clip is padded by finish_clip)
            last_shown = prev_t + (1.0 / fps if fps else 0.0)
            while len(picked) < N_FRAMES and targets[len(picked)] < last_shown:
                picked.append(_to_rgb(prev))
        if not picked and video and n_decoded:
            raise DecodeError(f"no video frame in the window starting at {start_s:g} s (the video ends at "
                              f"{prev_t - base:.2f} s)", stage="video", kind="window-after-end")
        if bad_packets:
            warnings.append(f"{bad_packets} corrupt packet(s) skipped")
        if read_error:
            warnings.append(f"reading stopped early: {read_error}")
        audio = sink.samples() if sink is not None else None
        had_audio = audio is not None and audio.shape[0] > 0
        if not video:
            return DecodedClip(frames=np.zeros((0,), np.uint8), audio=audio, fps=fps, duration=duration,
                               frames_decoded=0, audio_samples=0 if audio is None else len(audio),
                               had_audio=had_audio, warnings=warnings, backend="pyav")
        return finish_clip(picked, audio, strict=strict, warnings=warnings, fps=fps, duration=duration,
                           frames_decoded=n_decoded, had_audio=had_audio, backend="pyav")
