"""A small, learnable audio-visual data set made on the spot, and an analytic oracle that scores audio.

K = 8 classes. Class k = 2·p + r pairs a visual motif with a sound:

* pitch index p ∈ 0..3 → a pure tone of 265, 930, 1920 or 3820 Hz (≥ 2× apart; each in its own token
  row of the 5×53 audio grid);
* rhythm r ∈ 0..1 → steady tone, or a beat of 0.897 Hz laid on the audio token grid (3 token columns on,
  3 off, starting at 0 s): nine onsets vs one;
* the picture is a square of the class's own colour on a flat grey background (one level for every
  clip), solid for a steady tone and striped for a pulsed one, always at the same place and size (13×13
  cells of the 16×16 token grid): every clip of a class shows the same picture.

Each clip's sound draws a random loudness, pitch jitter (±2 %) and tone phase, so no two clips are
identical; what a clip's tokens say is its class, nothing else (docs/method.md, "The demo", says why the
layout, the background, the pulse phase and the noise are fixed). Videos are made with ffmpeg: each class's
picture once, lavfi `color` + `drawbox` (256×256, 5 fps, H.264), then one process per clip that copies that
stream and encodes the numpy-synthesised sound piped in as raw PCM (22050 Hz mono, AAC). The oracle
`classify_audio` needs no training: the class whose pitch band holds the most spectral energy (FFT), and
whether that band's envelope beats at PULSE_HZ.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from avtok.model.files import atomic_write_bytes
from avtok.model.geometry import AUDIO_COLUMN_S, AUDIO_GRID, SAMPLE_RATE, audio_column_edge_s

from .ffmpeg import ffmpeg_exe

DURATION_S = 10.0
SIZE = 256
FPS = 5
# One tone per mel-token row (16 mel bins each), at a different height inside its row (mel bins 3, 22, 42, 61
# of 80 = in-row bins 3, 6, 10, 13). A patch tokenizer's codes do not know their row, so a model that puts a
# tone's code in the wrong row makes a frequency that is in no class band, never another class's pitch.
PITCHES_HZ = (265.0, 930.0, 1920.0, 3820.0)
BAND_REL = 0.06  # the oracle's pitch bands: ±6 % (the nearest wrong-row frequency is ≥ 10 % away)
RHYTHMS = ("steady", "pulse")
# The beat sits on the audio token grid as the square sits on the image grid: on for PULSE_COLUMNS token
# columns, off for as many, from column 0, so each column is wholly on or off and a pulsed row needs four
# codes (tone, silence, onset, offset) instead of one per place an edge can fall inside a patch
# (docs/method.md, "The demo", says why)
PULSE_COLUMNS = 3
PULSE_HZ = 1.0 / (2 * PULSE_COLUMNS * AUDIO_COLUMN_S)  # 0.897 Hz
PULSE_THRESHOLD = 0.3  # pulse_strength: a 50 % on/off beat gives ≈ 0.64, a steady tone ≈ 0
COLOURS = ("e02828", "f08c00", "e8e020", "28c03c", "20d0d0", "2850f0", "9040e0", "f040b0")
COLOUR_NAMES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta")
MANIFEST_COLUMNS = ("video_id", "path", "start_s", "label", "split")
CELL = 16  # the image tokenizer's patch: the square and its stripes are laid on this grid
# Side of the square and its top-left cell: one fixed layout, two thirds of the picture's tokens
SQUARE_CELLS = 13
SQUARE_AT = 1
# One grey for every clip: with a random level per clip (40-109) the small model drew joint pictures whose
# backgrounds mixed many grey codes, and read the wrong sound from them (docs/method.md, "The demo")
BACKGROUND_LEVEL = 75


@dataclass(frozen=True)
class SynthClass:
    """One class of the synthetic set."""

    index: int
    name: str
    colour: str  # hex rrggbb
    motif: str  # "solid" | "striped"
    pitch_hz: float
    rhythm: str  # "steady" | "pulse"

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The square's colour as 8-bit (r, g, b)."""
        return tuple(int(self.colour[i:i + 2], 16) for i in (0, 2, 4))


def _make_classes() -> tuple[SynthClass, ...]:
    out = []
    for k in range(8):
        p, r = divmod(k, 2)
        motif = "solid" if r == 0 else "striped"
        name = f"{COLOUR_NAMES[k]}-{motif}-{int(PITCHES_HZ[p])}hz-{RHYTHMS[r]}"
        out.append(SynthClass(k, name, COLOURS[k], motif, PITCHES_HZ[p], RHYTHMS[r]))
    return tuple(out)


CLASSES: tuple[SynthClass, ...] = _make_classes()
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
NUM_CLASSES = len(CLASSES)


def class_index(label: str) -> int:
    """Class index of a manifest/shard label (the class name)."""
    try:
        return CLASS_NAMES.index(label)
    except ValueError:
        raise ValueError(f"{label!r} is not a synthetic class; known: {', '.join(CLASS_NAMES)}") from None


# ---------------------------------------------------------------------------------------------- audio
def synth_audio(k: int, rng: np.random.Generator, sr: int = SAMPLE_RATE,
                duration_s: float = DURATION_S, noise: bool = False) -> np.ndarray:
    """The sound of class `k`: float32 mono [sr·duration]; random loudness, jitter and tone phase.
    `noise` adds faint broadband noise (1-4 % of the tone), as a recording would have (oracle tests)."""
    cls = CLASSES[k]
    n = int(round(sr * duration_s))
    t = np.arange(n) / sr
    f = cls.pitch_hz * rng.uniform(0.98, 1.02)
    amp = rng.uniform(0.25, 0.4)
    wave = amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    if cls.rhythm == "pulse":
        wave = wave * _soft_gate(n, sr)
    if noise:
        wave = wave + amp * rng.uniform(0.01, 0.04) * rng.standard_normal(n)
    return wave.astype(np.float32)


def pulse_gate(n: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """1/0 per sample: on in token columns 0-2, 6-8, ... (`audio_column_edge_s` says where a column
    begins; the few samples before the mel crop belong to column 0, those after it to the last)."""
    edges = np.array([audio_column_edge_s(w) for w in range(1, AUDIO_GRID[1] + PULSE_COLUMNS)])
    column = np.searchsorted(edges, np.arange(n) / sr, side="right")
    return ((column // PULSE_COLUMNS) % 2 == 0).astype(np.float64)


@functools.cache
def _soft_gate(n: int, sr: int) -> np.ndarray:
    """`pulse_gate` with 10 ms raised-cosine edges: clean onsets without clicks spreading over the whole
    spectrum. The same for every pulsed clip, so made once (the convolution was most of a clip's sound)."""
    ramp = int(0.01 * sr)
    kernel = np.hanning(2 * ramp + 1)
    gate = np.convolve(pulse_gate(n, sr), kernel / kernel.sum(), mode="same")
    gate.flags.writeable = False
    return gate


@functools.cache
def hann(n: int) -> np.ndarray:
    """np.hanning(n), made once per length (the oracle windows every clip the same way); read-only."""
    w = np.hanning(n)
    w.flags.writeable = False
    return w


def frames_of(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """[1 + (len - n_fft) // hop, n_fft] windows of `wave` every `hop` samples, as a view (no copy)."""
    return np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop]


def _band_mask(freqs: np.ndarray, centre: float, rel: float = BAND_REL) -> np.ndarray:
    return (freqs >= centre * (1 - rel)) & (freqs <= centre * (1 + rel))


def audio_features(wave: np.ndarray, sr: int) -> dict[str, float]:
    """The oracle's measurements: energy per class pitch band, peak frequency, onsets in the chosen band."""
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    wave = wave - wave.mean()
    if wave.size < 2048 or not np.any(wave):
        return {"pitch_index": 0, "peak_hz": 0.0, "onsets": 0, "pulse": 0.0, "band_energy": [0.0] * len(PITCHES_HZ)}
    spec = np.abs(np.fft.rfft(wave * hann(wave.size))) ** 2
    freqs = np.fft.rfftfreq(wave.size, 1 / sr)
    # Energy in ±6 % around each candidate pitch: robust to the mel/Griffin-Lim smearing of a tone.
    band = [float(spec[_band_mask(freqs, p)].sum()) for p in PITCHES_HZ]
    p_idx = int(np.argmax(band))
    in_range = (freqs >= 150) & (freqs <= 5000)
    peak_hz = float(freqs[in_range][np.argmax(spec[in_range])])
    env = band_envelope(wave, sr, PITCHES_HZ[p_idx])  # once for both measures (half the oracle's time)
    return {"pitch_index": p_idx, "peak_hz": peak_hz, "onsets": count_onsets(wave, sr, PITCHES_HZ[p_idx], env),
            "pulse": pulse_strength(wave, sr, PITCHES_HZ[p_idx], env), "band_energy": band}


def band_envelope(wave: np.ndarray, sr: int, centre_hz: float) -> np.ndarray:
    """Power in ±6 % around `centre_hz`, per 256-sample hop (≈ 86 values a second)."""
    n_fft, hop = 1024, 256
    n_frames = 1 + (wave.size - n_fft) // hop
    if n_frames < 4:
        return np.zeros(0)
    frames = frames_of(wave, n_fft, hop) * hann(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    return power[:, _band_mask(freqs, centre_hz)].sum(axis=1)


def count_onsets(wave: np.ndarray, sr: int, centre_hz: float, env: np.ndarray | None = None) -> int:
    """Onsets of the energy envelope in ±6 % around `centre_hz` (hysteresis on the dB envelope); `env`:
    that band's `band_envelope`, when already computed."""
    env = band_envelope(wave, sr, centre_hz) if env is None else env
    if env.size == 0:
        return 0
    env_db = 10 * np.log10(env + 1e-12)
    # ~200 ms moving average: a dropout shorter than one audio token (186 ms) is flicker, not a beat;
    # the 0.56 s gaps of a pulse stay deep
    k = 17
    env_db = np.convolve(np.pad(env_db, (k // 2, k // 2), mode="edge"), np.ones(k) / k, mode="valid")
    top = np.percentile(env_db, 95)
    hi, lo = top - 6.0, top - 12.0
    onsets, state = 0, False
    for v in env_db:
        if not state and v > hi:
            state, onsets = True, onsets + 1
        elif state and v < lo:
            state = False
    return onsets


def pulse_strength(wave: np.ndarray, sr: int, centre_hz: float, env: np.ndarray | None = None) -> float:
    """How strongly the band's amplitude envelope repeats at PULSE_HZ: |E(f)| / E(0), the largest over
    f within ±15 % of PULSE_HZ. A half-on, half-off gate gives 2/π ≈ 0.64, a steady tone ≈ 0, and a
    tone with irregular gaps (no beat) stays low: what counts is a regular beat, not any dropout. `env`:
    the band's `band_envelope`, when already computed."""
    env = np.sqrt(band_envelope(wave, sr, centre_hz) if env is None else env)
    if env.size == 0 or env.sum() <= 0:
        return 0.0
    rate = sr / 256
    t = np.arange(env.size) / rate
    freqs = PULSE_HZ * np.linspace(0.85, 1.15, 13)
    mags = np.abs(np.exp(-2j * np.pi * freqs[:, None] * t[None, :]) @ env)
    return float(mags.max() / env.sum())


def classify_audio(wave: np.ndarray, sr: int) -> int:
    """The oracle: class index of a waveform (pitch band with most energy × steady/pulsed by the
    strength of a PULSE_HZ beat in that band's envelope)."""
    feats = audio_features(wave, sr)
    rhythm = 1 if feats["pulse"] >= PULSE_THRESHOLD else 0
    return 2 * int(feats["pitch_index"]) + rhythm


# ---------------------------------------------------------------------------------------------- video
def _video_filter(k: int) -> str:
    """The lavfi graph of one clip's picture: the flat grey background + the class motif (the same for
    every clip of a class).

    The square sits on the 16-pixel token grid (SQUARE_CELLS cells from cell SQUARE_AT) and a
    striped square is made of whole cell rows (colour, background, colour, ...): every patch is colour
    or background, so a 64-code patch tokenizer keeps the motif and the image oracle is exact on its
    reconstructions.
    """
    cls = CLASSES[k]
    cells = SQUARE_CELLS
    side = cells * CELL
    x = y = SQUARE_AT * CELL
    grey = f"{BACKGROUND_LEVEL:02x}" * 3
    parts = [f"color=c=0x{grey}:s={SIZE}x{SIZE}:r={FPS}:d={DURATION_S:g}", "format=yuv420p"]
    col = f"0x{cls.colour}"
    if cls.motif == "solid":
        parts.append(f"drawbox=x={x}:y={y}:w={side}:h={side}:color={col}:t=fill")
    else:
        for j in range(0, cells, 2):  # cell rows 0, 2, 4, ...: first and last row are colour
            parts.append(f"drawbox=x={x}:y={y + j * CELL}:w={side}:h={CELL}:color={col}:t=fill")
    return ",".join(parts)


# one thread per encoder and bit-exact muxing (no encoder version string, no timestamps in the header): the
# same seed makes the same bytes, whatever else runs beside it
_H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "28", "-threads", "1",
         "-x264-params", "threads=1:sliced-threads=0"]
_BITEXACT = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags", "+bitexact"]


def _ffmpeg(cmd: list[str], out: Path, stdin: bytes | None = None) -> None:
    """Run ffmpeg writing to a temporary name beside `out`, then move it into place."""
    tmp = out.with_name(f".{out.stem}.tmp.mp4")
    try:
        proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-threads", "1", *cmd, str(tmp)],
                              input=stdin, capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed for {out.name}: {proc.stderr.decode(errors='replace')[-500:]}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def make_class_video(path: str | os.PathLike, k: int) -> None:
    """Write class `k`'s picture as a 10 s H.264 stream (mp4, no sound): the video of every clip of the class."""
    _ffmpeg(["-f", "lavfi", "-i", _video_filter(k), *_H264, "-t", f"{DURATION_S:g}", *_BITEXACT], Path(path))


def make_clip(path: str | os.PathLike, k: int, seed: int, video: str | os.PathLike | None = None) -> None:
    """Write one 10 s clip of class `k` (mp4: H.264 256×256 5 fps + AAC 22050 Hz mono), atomically.
    `video`: the class's stream from `make_class_video`, copied instead of encoded again (the same frames)."""
    audio = synth_audio(k, np.random.default_rng(seed))
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    if video is None:
        picture = ["-f", "lavfi", "-i", _video_filter(k)]
        codec = _H264
    else:
        picture, codec = ["-i", str(video)], ["-c:v", "copy"]
    _ffmpeg([*picture, "-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0",
             "-map", "0:v", "-map", "1:a", *codec, "-c:a", "aac", "-b:a", "64k", "-t", f"{DURATION_S:g}",
             "-shortest", *_BITEXACT], Path(path), pcm)


def clip_seed(seed: int, k: int, i: int) -> int:
    """The generator seed of clip `i` of class `k` in the set made with `seed`: one per clip, so the same
    clip comes out whatever else is made or skipped."""
    return int(np.random.SeedSequence([seed, k, i]).generate_state(1)[0])


def make_dataset(out_dir: str | os.PathLike, clips_per_class: int = 20, test_per_class: int = 5,
                 seed: int = 0, workers: int = 2,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Make the synthetic set under `out_dir/videos/` and its manifest `out_dir/manifest.csv`.

    Clips that already exist are kept (a re-run only makes what is missing). The last `test_per_class`
    clips of each class are the test split. Returns the manifest path.
    """
    out = Path(out_dir)
    vids = out / "videos"
    vids.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, float, str, str]] = []
    jobs: list[tuple[Path, int, int]] = []
    for cls in CLASSES:
        for i in range(clips_per_class):
            vid = f"synth-{cls.index}-{i:03d}"
            path = vids / f"{vid}.mp4"
            split = "test" if i >= clips_per_class - test_per_class else "train"
            rows.append((vid, str(path.resolve()), 0.0, cls.name, split))
            if not path.is_file():
                jobs.append((path, cls.index, clip_seed(seed, cls.index, i)))
    done = 0
    total = len(jobs)
    # every clip of a class shows the same picture: each class's H.264 stream is encoded once and copied
    # into its clips, which then cost only their sound (the frames decode to the same pixels)
    with tempfile.TemporaryDirectory(dir=vids, prefix=".class-videos-") as tmp, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        videos = {k: Path(tmp) / f"class-{k}.mp4" for k in sorted({k for _, k, _ in jobs})}
        list(pool.map(lambda k: make_class_video(videos[k], k), videos))
        for _ in pool.map(lambda j: make_clip(*j, video=videos[j[1]]), jobs):
            done += 1
            if progress is not None:
                progress(done, total)
    manifest = out / "manifest.csv"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    atomic_write_bytes(manifest, buf.getvalue().encode())
    return manifest


def oracle_scores(waves: list[np.ndarray], sr: int, labels: list[str]) -> dict:
    """Oracle accuracy of `waves` against their class `labels`: overall, per class, and the confusion matrix."""
    truth = [class_index(lab) for lab in labels]
    pred = [classify_audio(w, sr) for w in waves]
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    for t, p in zip(truth, pred, strict=True):
        confusion[t, p] += 1
    per_class = {CLASS_NAMES[k]: (float(confusion[k, k] / confusion[k].sum()) if confusion[k].sum() else None)
                 for k in range(NUM_CLASSES)}
    n = len(truth)
    return {"accuracy": float(np.trace(confusion) / n) if n else 0.0, "n": n, "chance": 1.0 / NUM_CLASSES,
            "pitch_accuracy": float(np.mean([t // 2 == p // 2 for t, p in zip(truth, pred, strict=True)])) if n else 0.0,
            "rhythm_accuracy": float(np.mean([t % 2 == p % 2 for t, p in zip(truth, pred, strict=True)])) if n else 0.0,
            "per_class": per_class, "confusion": confusion.tolist(), "predictions": pred}


def is_synthetic_labels(labels: list[str]) -> bool:
    """True when every label is a synthetic class name (the oracle applies)."""
    return bool(labels) and all(lab in CLASS_NAMES for lab in labels)
