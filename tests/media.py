"""Test media made on the fly with the ffmpeg binary avtok uses (lavfi sources, no downloads).

    from media import make_clip, make_seconds_clip, second_of_frame, make_zoo, truncate, corrupt_middle

* `make_clip(path, duration=10, size=(640, 360), fps=25, audio="sine", ...)` → Path of an
  H.264+AAC mp4 by default; options pick the picture source, audio layout/rate, codecs, GOP, VFR.
* `make_seconds_clip(path, duration=12, ...)`: every second k shows a flat grey of level
  `10 + 20·k` (k = 0..11), so `second_of_frame(rgb)` tells which second a decoded frame is from.
* `truncate(path, fraction)`, `corrupt_middle(path, n_bytes)`, `make_junk(path)`: broken files.
* `make_zoo(folder, big=True)` → {name: Path}: the odd/broken inputs of the extract acceptance test;
  `ZOO_ERRORS` names the entries that must end as errors (nothing decodable).
* `run_ffmpeg(args)`: run the ffmpeg binary quietly with your own arguments (raises with stderr).
All helpers are deterministic (fixed seeds) and quick (small, short clips unless asked otherwise).
"""

from __future__ import annotations

import math
import random
import subprocess
from pathlib import Path

import numpy as np
from avtok.pipeline.ffmpeg import ffmpeg_exe

# libvpx on one thread: its default threading takes 10-20x longer on a busy 2-core machine (measured 0.6 s
# against 10-18 s for a 10 s clip)
VCODEC_ARGS = {
    "libx264": ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"],
    "libvpx-vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k", "-threads", "1"],
    "libvpx": ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k", "-threads", "1"],
    "mpeg4": ["-c:v", "mpeg4", "-q:v", "5"],
}


def run_ffmpeg(args: list[str]) -> None:
    """Run ffmpeg quietly; raise with its stderr if it fails."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")


def _video_source(source: str, size: tuple[int, int], fps: float, duration: float) -> str:
    w, h = size
    if source == "testsrc2":
        return f"testsrc2=size={w}x{h}:rate={fps}:duration={duration}"
    if source == "mandelbrot":  # high detail, slowly changing: a hard clip for the decoder
        return f"mandelbrot=size={w}x{h}:rate={fps},trim=duration={duration}"
    if source == "seconds":  # flat grey, level 10 + 20*floor(t): one flat `color` segment per second, concatenated
        # (the same picture a per-pixel geq expression draws, without evaluating it for every pixel of every frame)
        n = max(math.ceil(duration), 1)
        levels = [min(10 + 20 * k, 255) for k in range(n)]  # geq clipped at 255 too
        parts = [f"color=c=0x{v:02x}{v:02x}{v:02x}:size={w}x{h}:rate={fps}:duration={min(1.0, duration - k)},"
                 f"format=rgb24[s{k}]" for k, v in enumerate(levels)]
        return ";".join(parts) + ";" + "".join(f"[s{k}]" for k in range(n)) + f"concat=n={n}:v=1:a=0[out0]"
    if source == "black":
        return f"color=c=black:size={w}x{h}:rate={fps}:duration={duration}"
    raise ValueError(f"unknown video source {source!r}")


def _audio_source(audio: str, rate: int, channels: int, duration: float) -> str:
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    if audio == "sine":
        # a different tone per channel so a downmix is not trivially equal to one channel
        exprs = "|".join(f"0.3*sin({220 * (c + 1)}*2*PI*t)" for c in range(channels))
        return f"aevalsrc=exprs='{exprs}':c={layout}:s={rate}:d={duration}"
    if audio == "noise":
        return f"anoisesrc=color=pink:sample_rate={rate}:amplitude=0.3:duration={duration}:seed=1,aformat=channel_layouts={layout}"
    if audio == "silence":
        return f"anullsrc=channel_layout={layout}:sample_rate={rate},atrim=duration={duration}"
    raise ValueError(f"unknown audio source {audio!r}")


def make_clip(path: str | Path, *, duration: float = 10.0, size: tuple[int, int] = (640, 360), fps: float = 25,
              source: str = "testsrc2", audio: str | None = "sine", audio_rate: int = 44100, channels: int = 1,
              vcodec: str = "libx264", acodec: str = "aac", gop: int | None = None, vfr: bool = False,
              faststart: bool = False, audio_duration: float | None = None) -> Path:
    """Make a synthetic clip (container from the file extension). Returns its Path.

    source: testsrc2 | mandelbrot | seconds | black; audio: sine | noise | silence | None (no stream);
    channels 1, 2 or 6 (5.1); gop: keyframe interval in frames (x264 default: one per 250);
    vfr: drop frames irregularly and keep the original timestamps (variable frame rate).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["-f", "lavfi", "-i", _video_source(source, size, fps, duration)]
    if audio is not None:
        args += ["-f", "lavfi", "-i", _audio_source(audio, audio_rate, channels, audio_duration or duration)]
    if vfr:
        # keep ~half of the frames in an irregular pattern; gaps stay ≤ 3 frames
        args += ["-vf", "select='lt(mod(n\\,5)\\,2)+eq(mod(n\\,7)\\,3)'", "-fps_mode", "vfr"]
    args += VCODEC_ARGS.get(vcodec, ["-c:v", vcodec])
    if gop is not None:
        args += ["-g", str(gop), "-keyint_min", str(gop)]
    if audio is not None:
        args += ["-c:a", acodec]
        if acodec in ("aac", "libopus", "libvorbis"):
            args += ["-b:a", "96k"]
    if faststart:
        args += ["-movflags", "+faststart"]
    args += ["-t", str(duration), str(path)]
    run_ffmpeg(args)
    return path


def make_seconds_clip(path: str | Path, *, duration: float = 12.0, size: tuple[int, int] = (320, 240),
                      fps: float = 25, **kw) -> Path:
    """A clip whose picture is a flat grey 10 + 20·k during second k (identify with second_of_frame)."""
    return make_clip(path, duration=duration, size=size, fps=fps, source="seconds", **kw)


def second_of_frame(frame: np.ndarray) -> int:
    """Which second of a make_seconds_clip a decoded RGB frame shows (from its mean grey level)."""
    return int(round((float(np.mean(frame)) - 10.0) / 20.0))


def truncate(path: str | Path, fraction: float = 0.6, out: str | Path | None = None) -> Path:
    """Keep only the first `fraction` of the file's bytes (in place, or into `out`)."""
    data = Path(path).read_bytes()
    out = Path(out or path)
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def corrupt_middle(path: str | Path, n_bytes: int = 20_000, seed: int = 0, out: str | Path | None = None) -> Path:
    """Overwrite `n_bytes` in the middle of the file with random bytes."""
    data = bytearray(Path(path).read_bytes())
    mid = len(data) // 2
    rng = random.Random(seed)
    data[mid: mid + n_bytes] = bytes(rng.randrange(256) for _ in range(min(n_bytes, len(data) - mid)))
    out = Path(out or path)
    out.write_bytes(bytes(data))
    return out


def make_junk(path: str | Path, n_bytes: int = 1024, seed: int = 0) -> Path:
    """A file of random bytes (e.g. named .mp4 but not a video)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(n_bytes))
    return path


def make_zoo(folder: str | Path, big: bool = True) -> dict[str, Path]:
    """The odd and broken inputs of the extract acceptance test, written into `folder`.

    Every entry decodes to a sample except "junk" and "truncated_moov_end" (errors: nothing decodable).
    With big=False the 1080p clip is left out (it is the slowest to make and decode).
    """
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    z: dict[str, Path] = {}
    z["normal"] = make_clip(d / "normal.mp4", audio_rate=44100, channels=1)
    if big:
        z["hd1080"] = make_clip(d / "hd1080.mp4", size=(1920, 1080), fps=5, duration=10)  # 50 full-HD frames
    z["short4s"] = make_clip(d / "short4s.mp4", duration=4)
    z["no_audio"] = make_clip(d / "no_audio.mp4", audio=None)
    z["vfr"] = make_clip(d / "vfr.mp4", vfr=True, fps=30, source="seconds", size=(320, 240))
    z["stereo48k"] = make_clip(d / "stereo48k.mp4", audio_rate=48000, channels=2, size=(320, 240))
    z["surround51"] = make_clip(d / "surround51.mp4", audio_rate=48000, channels=6, size=(320, 240))
    src = make_clip(d / "_src_faststart.mp4", faststart=True, size=(320, 240))
    z["truncated_faststart"] = truncate(src, 0.6, d / "truncated_faststart.mp4")
    src2 = make_clip(d / "_src_moovend.mp4", size=(320, 240))
    z["truncated_moov_end"] = truncate(src2, 0.6, d / "truncated_moov_end.mp4")
    z["garbage_middle"] = corrupt_middle(src, 20_000, out=d / "garbage_middle.mp4")
    src.unlink()
    src2.unlink()
    z["junk"] = make_junk(d / "junk.mp4")
    z["unicode_spaces"] = make_clip(d / "clip with spaces – çafé ü.mp4", size=(320, 240))
    z["mov"] = make_clip(d / "quicktime.mov", size=(320, 240))
    z["webm"] = make_clip(d / "web.webm", size=(320, 240), vcodec="libvpx-vp9", acodec="libopus", audio_rate=48000)
    z["avi"] = make_clip(d / "old.avi", size=(320, 240), vcodec="mpeg4", acodec="pcm_s16le")
    return z


# Which zoo entries must end as errors (nothing decodable); everything else must be a sample.
ZOO_ERRORS = {"junk", "truncated_moov_end"}


def make_counter_clip(path: str | Path, *, duration: float = 12.0, fps: float = 8, size: tuple[int, int] = (320, 240),
                      vfr: bool = False, **kw) -> Path:
    """A clip whose frame n shows n in binary: 8 horizontal bands, band k white if bit k of n is set
    (read back with `frame_number`, robust to compression and to resizing/cropping the width).
    The audio is pink noise, so any shift of the audio window shows."""
    path = Path(path)
    w, h = size
    src = (f"color=c=black:size={w}x{h}:rate={fps}:duration={duration},format=gray,"
           "geq=lum='255*mod(floor(N/pow(2\\,floor(Y*8/H)))\\,2)',format=yuv420p")
    args = ["-f", "lavfi", "-i", src, "-f", "lavfi", "-i", _audio_source("noise", 44100, 1, duration)]
    if vfr:
        args += ["-vf", "select='lt(mod(n\\,5)\\,2)+eq(mod(n\\,7)\\,3)'", "-fps_mode", "vfr"]
    vcodec = kw.pop("vcodec", "libx264")
    acodec = kw.pop("acodec", "aac")
    args += VCODEC_ARGS.get(vcodec, ["-c:v", vcodec]) + ["-g", str(kw.pop("gop", int(fps * 4)))]
    args += ["-c:a", acodec, "-b:a", "128k", "-t", str(duration), str(path)]
    assert not kw, kw
    run_ffmpeg(args)
    return path


def frame_number(frame: np.ndarray) -> int:
    """The frame number a decoded 256×256 frame of `make_counter_clip` shows."""
    bands = frame.reshape(8, frame.shape[0] // 8, *frame.shape[1:])[:, 6:-6].mean(axis=(1, 2, 3))
    return int(sum(1 << k for k, level in enumerate(bands) if level > 128))
