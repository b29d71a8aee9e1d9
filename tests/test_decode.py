"""decode(): frames chosen by timestamp, resize/crop, audio rate/downmix, padding, errors — every backend."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from avtok.pipeline.decode import decode
from avtok.pipeline.decoded import DecodeError, pick_indices, scaled_size
from avtok.pipeline.ffmpeg import ffmpeg_exe
from media import (
    frame_number,
    make_clip,
    make_counter_clip,
    make_junk,
    make_seconds_clip,
    run_ffmpeg,
    second_of_frame,
    truncate,
)

BACKENDS = ["pyav", "decord", "ffmpeg"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("decode_media")
    return dict(
        cfr=make_seconds_clip(d / "seconds.mp4", duration=12, fps=25),
        vfr=make_seconds_clip(d / "seconds_vfr.mp4", duration=12, fps=30, vfr=True),
        gop=make_seconds_clip(d / "seconds_gop.mkv", duration=12, fps=24, gop=48),
        short=make_clip(d / "short.mp4", duration=4, size=(320, 240)),
        noaudio=make_clip(d / "noaudio.mp4", audio=None, size=(320, 240)),
        stereo=make_clip(d / "stereo.mp4", audio="noise", channels=2, audio_rate=48000, size=(320, 180)),
        portrait=make_clip(d / "portrait.webm", size=(240, 320), vcodec="libvpx", acodec="libvorbis"),
        noise=make_clip(d / "noise.mp4", duration=14, audio="noise", size=(160, 120), fps=10),
        junk=make_junk(d / "junk.mp4"),
        truncated=truncate(make_clip(d / "t.mp4", size=(320, 240)), 0.5, d / "truncated_moovend.mp4"),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clip", ["cfr", "vfr", "gop"])
def test_frame_i_is_second_i_plus_half(media, backend, clip):
    out = decode(media[clip], 0.0, backend=backend)
    assert out.frames.shape == (10, 256, 256, 3) and out.frames.dtype == np.uint8
    assert [second_of_frame(f) for f in out.frames] == list(range(10))
    assert out.warnings == [] and out.backend == backend


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clip", ["cfr", "vfr"])
def test_start_offset(media, backend, clip):
    # frame i is shown at start + i + 0.5: start 0.6 → second i+1 (i+1.1), start 0.4 → second i (i+0.9)
    assert [second_of_frame(f) for f in decode(media[clip], 0.6, backend=backend).frames] == list(range(1, 11))
    assert [second_of_frame(f) for f in decode(media[clip], 0.4, backend=backend).frames] == list(range(10))
    out = decode(media[clip], 2.0, backend=backend)
    assert [second_of_frame(f) for f in out.frames] == list(range(2, 12))
    assert out.audio_samples == 220500 and out.warnings == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_audio_window_follows_start(media, backend):
    whole = decode(media["noise"], 0.0, backend=backend).audio
    for start in (2.0, 2.37):
        part = decode(media["noise"], start, backend=backend).audio
        off = round(start * 22050)
        a, b = part[5000:150_000], whole[off + 5000: off + 150_000]
        # same samples away from the resampler's edge; ffmpeg's atrim cuts the 44.1 kHz input, so its
        # 22.05 kHz output may be up to a sample off (a different resampling phase)
        x, y = a[10:-10], b[10:-10]
        if backend == "ffmpeg":
            best = max(float(np.dot(x, b[10 + k: len(b) - 10 + k])) for k in (-1, 0, 1))
            assert best / float(np.dot(x, x)) > 0.9
        else:
            assert np.abs(x - y).max() < 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_clip_padded_or_strict(media, backend):
    out = decode(media["short"], backend=backend)
    assert out.frames.shape == (10, 256, 256, 3)
    assert np.array_equal(out.frames[4], out.frames[9])  # last real frame repeated
    assert not np.array_equal(out.frames[0], out.frames[3])  # testsrc2 moves
    assert abs(out.audio_samples - 4 * 22050) < 1200
    assert out.audio.shape == (220500,) and out.audio.dtype == np.float32
    assert np.all(out.audio[out.audio_samples:] == 0)
    assert any("repeated the last frame" in w for w in out.warnings)
    assert any("zero-padded" in w for w in out.warnings)
    with pytest.raises(DecodeError) as exc:
        decode(media["short"], backend=backend, strict=True)
    assert exc.value.kind == "short-video" and exc.value.stage == "strict"


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_audio_is_silence(media, backend):
    out = decode(media["noaudio"], backend=backend)
    assert not out.had_audio and out.audio_samples == 0
    assert np.all(out.audio == 0) and out.audio.shape == (220500,)
    assert out.warnings == ["no audio stream: silence"]
    with pytest.raises(DecodeError, match="no audio stream"):
        decode(media["noaudio"], backend=backend, strict=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreadable_files_are_decode_errors(media, backend):
    for name in ("junk", "truncated"):
        with pytest.raises(DecodeError) as exc:
            decode(media[name], backend=backend)
        assert exc.value.stage == "open"
        assert "Invalid data" in str(exc.value)


def test_downmix_matches_ffmpeg_ac1(media):
    """pyav audio = `ffmpeg -ac 1 -ar 22050` (swr downmix, not a channel mean)."""
    cmd = [ffmpeg_exe(), "-v", "error", "-i", str(media["stereo"]), "-vn", "-ac", "1", "-ar", "22050",
           "-f", "f32le", "pipe:"]
    ref = np.frombuffer(subprocess.run(cmd, capture_output=True, check=True).stdout, "<f4")[:220500]
    out = decode(media["stereo"]).audio
    assert out.shape == (220500,) and ref.shape == (220500,)
    assert np.abs(out - ref).max() < 0.02
    rms = float(np.sqrt(np.mean(out**2)))
    assert abs(rms / float(np.sqrt(np.mean(ref**2))) - 1) < 0.01


@pytest.mark.parametrize("backend", BACKENDS)
def test_portrait_resize_and_center_crop(media, backend):
    # 240x320 portrait: width → 256, height → 341, then the centre 256 rows
    assert scaled_size(240, 320) == (256, 341) and scaled_size(640, 360) == (455, 256)
    out = decode(media["portrait"], backend=backend)
    ref = decode(media["portrait"], backend="pyav")
    assert out.frames.shape == (10, 256, 256, 3)
    assert np.abs(out.frames.astype(int) - ref.frames).mean() < 6  # same frames, decoder/scaler noise only


@pytest.mark.parametrize("backend", BACKENDS)
def test_window_after_end_and_audio_only(media, tmp_path, backend):
    with pytest.raises(DecodeError) as exc:
        decode(media["short"], 20.0, backend=backend)
    assert exc.value.stage == "video"
    audio_only = tmp_path / "audio_only.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "sine=d=2", "-c:a", "aac", str(audio_only)])
    with pytest.raises(DecodeError, match="no video stream") as exc:
        decode(audio_only, backend=backend)
    assert exc.value.kind == "no-video-stream"


def test_pick_indices():
    times = [0.0, 0.4, 0.5, 1.7]
    assert pick_indices(times, [0.5, 1.0, 1.7, 5.0, -1.0]) == [2, 2, 3, 3, 0]


def test_unknown_backend(media):
    with pytest.raises(ValueError, match="unknown backend"):
        decode(media["cfr"], backend="nope")


# ------------------------------------------------------------------ the three backends agree, per container
@pytest.fixture(scope="module")
def containers(tmp_path_factory):
    """The same 12 s counter clip (frame n shows n; 8 fps; keyframe every 4 s) in every container ffmpeg
    makes here, plus variants with a non-zero start time and a variable frame rate."""
    d = tmp_path_factory.mktemp("containers")
    mp4 = make_counter_clip(d / "c.mp4")
    run_ffmpeg(["-ss", "2.6", "-i", str(mp4), "-c", "copy", str(d / "cut.mp4")])  # edit list: hidden leading frames
    run_ffmpeg(["-i", str(mp4), "-c", "copy", "-output_ts_offset", "3.7", str(d / "offset.mkv")])  # starts at 3.7 s
    run_ffmpeg(["-i", str(mp4), "-c", "copy", str(d / "copied.ts")])  # stream copy into MPEG-TS (starts at 1.4 s)
    return {
        "mp4": mp4,
        "mkv": make_counter_clip(d / "c.mkv"),
        "webm": make_counter_clip(d / "c.webm", vcodec="libvpx-vp9", acodec="libopus"),
        "ts": make_counter_clip(d / "c.ts"),
        "cut_mp4": d / "cut.mp4",
        "offset_mkv": d / "offset.mkv",
        "copied_ts": d / "copied.ts",
        "vfr_mp4": make_counter_clip(d / "vfr.mp4", fps=20, vfr=True),
    }


def _expected_numbers(name: str, start: float) -> list[int] | None:
    """Frame numbers shown at start + i + 0.5 s, where the timeline is simple enough to write down."""
    if name in ("mp4", "mkv", "webm", "offset_mkv"):  # 8 fps from the container start
        return [int((start + i + 0.5) * 8) for i in range(10)]
    if name in ("ts", "copied_ts"):  # video starts 23 ms after the audio (the container start)
        return [int((start + i + 0.5 - 0.023) * 8) for i in range(10)]
    if name == "vfr_mp4":  # 20 fps source, frames kept where n%5 < 2 or n%7 == 3
        kept = [n for n in range(240) if n % 5 < 2 or n % 7 == 3]
        return [max(n for n in kept if n / 20 <= start + i + 0.5 + 1e-6) for i in range(10)]
    return None  # cut_mp4: checked by agreement only


# Measured on these clips: 0 (pixels) and 0.0075 (audio, webm at 1.3 s); textured pictures differ more
# between scalers (test_portrait_resize_and_center_crop allows a mean of 6 there).
PIXEL_TOLERANCE = 1.0  # mean |difference| of the uint8 frames
AUDIO_TOLERANCE = 0.02  # max |difference| of the windows after the best lag of at most 2 samples


@pytest.mark.parametrize("start", [0.0, 1.3])
@pytest.mark.parametrize("name", ["mp4", "mkv", "webm", "ts", "cut_mp4", "offset_mkv", "copied_ts", "vfr_mp4"])
def test_backends_agree_on_every_container(containers, name, start):
    clips = {b: decode(containers[name], start, backend=b) for b in BACKENDS}
    numbers = {b: [frame_number(f) for f in c.frames] for b, c in clips.items()}
    assert numbers["decord"] == numbers["pyav"] and numbers["ffmpeg"] == numbers["pyav"], numbers
    expected = _expected_numbers(name, start)
    if expected is not None:
        assert numbers["pyav"] == expected
    ref = clips["pyav"]
    for b in ("decord", "ffmpeg"):
        c = clips[b]
        assert np.abs(c.frames.astype(int) - ref.frames).mean() < PIXEL_TOLERANCE, b
        assert abs(c.audio_samples - ref.audio_samples) <= 1100, b  # one codec frame at most
        n = min(c.audio_samples, ref.audio_samples) - 200
        x = ref.audio[100:n]
        best = min(float(np.abs(x - c.audio[100 + k: n + k]).max()) for k in (-2, -1, 0, 1, 2))
        assert best < AUDIO_TOLERANCE and np.abs(x).max() > 0.1, (b, best)
        padded = [w for w in c.warnings if "decord misplaces" not in w]
        assert padded == ref.warnings, b


@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
def test_seek_decodes_only_near_the_window(tmp_path, backend):
    # 60 s at 4 fps, a keyframe every 5 s: the window at 50 s needs the frames from 50 s on, not 200 before
    long = make_counter_clip(tmp_path / "long.mp4", duration=60, fps=4, size=(160, 120), gop=20)
    out = decode(long, 50.0, backend=backend)
    assert [frame_number(f) for f in out.frames] == [(50 + i) * 4 + 2 for i in range(10)]
    whole = 60 * 4
    assert out.frames_decoded <= (10 + 5 + 1) * 4 + 8 < whole / 3, out.frames_decoded
    assert out.audio_samples == 220500
    from_start = decode(long, 0.0, backend=backend)
    assert from_start.frames_decoded <= (10 + 1) * 4 + 8  # and a window at 0 stops after it
