"""Analytic oracles for the demo's four tasks on the synthetic set (no training, no weights).

* audio: `synthetic.classify_audio` (pitch band with most energy × the beat in that band);
* image: `classify_image`, the colour of the square (hue vote over saturated pixels) and whether it is
  solid or striped (the share of "full" pixel rows between its top and bottom row);
* joint: the image's class and the sound's class agree;
* inpainting: the regenerated span's class (the audio oracle on that span alone) and a click measure at
  each seam (`seam_click_db`: the jump of high-band energy at the seam over the clip's median).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from avtok.model.geometry import AUDIO_GRID, HOP, SAMPLE_RATE, audio_column_edge_s

from . import synthetic as syn

CHROMA_MIN = 60.0  # max-min of RGB: the grey background stays far below, every class colour far above
MIN_PIXELS = 64  # fewer saturated pixels than this: no square, no class
HUE_TOL = 20.0  # degrees around the winning colour's hue that count as "its" pixels
FILL_SOLID = 0.8  # share of full rows: solid ≈ 1, striped (n+1)/(2n) ≤ 0.6
CLICK_HZ = 5000.0  # above every class pitch band: a click spreads here, a tone does not
CLICK_DB = 10.0  # a seam whose high band rises this much over the clip's median carries a click
CLICK_WINDOW_S = 0.05  # ± around the seam


def _hue_deg(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of float RGB [..., 3]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)) % 360.0


def _class_hues() -> np.ndarray:
    cols = np.array([c.rgb for c in syn.CLASSES], dtype=np.float64)
    return _hue_deg(cols)


CLASS_HUES = _class_hues()


def _hue_dist(h: np.ndarray, ref: np.ndarray) -> np.ndarray:
    d = np.abs(h[..., None] - ref) % 360.0
    return np.minimum(d, 360.0 - d)


def classify_image(frame: np.ndarray) -> dict[str, Any]:
    """The image oracle on one uint8 frame [H, W, 3]: colour index, motif, fill and class index.

    The class is the colour's class when the motif (solid/striped) matches it, else -1 (no class):
    a picture must show both cues to name a class.
    """
    rgb = np.asarray(frame, dtype=np.float64)
    chroma = rgb.max(-1) - rgb.min(-1)
    mask = chroma >= CHROMA_MIN
    if int(mask.sum()) < MIN_PIXELS:
        return {"colour": -1, "motif": None, "fill": 0.0, "class": -1}
    hue = _hue_deg(rgb)
    nearest = np.argmin(_hue_dist(hue[mask], CLASS_HUES), axis=-1)
    colour = int(np.argmax(np.bincount(nearest, weights=chroma[mask], minlength=syn.NUM_CLASSES)))
    own = mask & (_hue_dist(hue, CLASS_HUES[colour : colour + 1])[..., 0] <= HUE_TOL)
    rows = own.sum(axis=1)
    full = rows >= 0.5 * rows.max()
    idx = np.flatnonzero(full)
    fill = float(full[idx[0] : idx[-1] + 1].mean())
    motif = "solid" if fill >= FILL_SOLID else "striped"
    cls = colour if syn.CLASSES[colour].motif == motif else -1
    return {"colour": colour, "motif": motif, "fill": fill, "class": cls}


def _scores(truth: list[int], pred: list[int]) -> dict[str, Any]:
    n = len(truth)
    confusion = np.zeros((syn.NUM_CLASSES, syn.NUM_CLASSES + 1), dtype=int)  # last column: no class
    for t, p in zip(truth, pred, strict=True):
        confusion[t, p if p >= 0 else syn.NUM_CLASSES] += 1
    return {"accuracy": float(np.trace(confusion[:, :-1]) / n) if n else 0.0, "n": n,
            "confusion": confusion.tolist(), "predictions": list(pred)}


def image_oracle_scores(frames: np.ndarray | list[np.ndarray], labels: list[str]) -> dict[str, Any]:
    """Image-oracle accuracy of `frames` against class `labels`, with colour and motif accuracy apart."""
    truth = [syn.class_index(lab) for lab in labels]
    res = [classify_image(f) for f in frames]
    out = _scores(truth, [r["class"] for r in res])
    n = max(1, len(truth))
    out["colour_accuracy"] = sum(r["colour"] == t for r, t in zip(res, truth, strict=True)) / n
    out["motif_accuracy"] = sum(r["motif"] == syn.CLASSES[t].motif for r, t in zip(res, truth, strict=True)) / n
    return out


def high_band_db(wave: np.ndarray, sr: int, n_fft: int = 128, hop: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(frame centre times in s, energy above CLICK_HZ in dB) of a waveform."""
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    if wave.size < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.size))
    spec = np.abs(np.fft.rfft(syn.frames_of(wave, n_fft, hop) * syn.hann(n_fft), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    energy = spec[:, freqs >= CLICK_HZ].sum(axis=1)
    return (np.arange(len(spec)) * hop + n_fft / 2) / sr, 10 * np.log10(energy + 1e-12)


def seam_click_db(wave: np.ndarray, sr: int, seams_s: list[float]) -> float:
    """The click measure: the largest rise, within ±CLICK_WINDOW_S of any seam, of the energy above
    CLICK_HZ (128-sample frames, 32 hop: short, so a transient stands out of the noise floor) over its median across the whole clip, in dB. A seam without
    a click stays near the clip's own spread (a few dB); one discontinuity gives tens of dB."""
    times, db = high_band_db(wave, sr)
    base = float(np.median(db))
    worst = -np.inf
    for s in seams_s:
        near = np.abs(times - s) <= CLICK_WINDOW_S
        if near.any():
            worst = max(worst, float(db[near].max()) - base)
    return worst if np.isfinite(worst) else 0.0


def hole_seams_s(hole: np.ndarray, grid: tuple[int, int] = AUDIO_GRID) -> list[float]:
    """Seconds at the edges of an audio-token hole (Bool[265], rows × columns): where the regenerated
    span meets the given audio, taken at the centre of the column's first mel frame (half a hop after
    `audio_column_edge_s`; the click measure's ±50 ms window covers both)."""
    cols = np.asarray(hole, dtype=bool).reshape(grid).any(axis=0)
    idx = np.flatnonzero(cols)

    def col_start(w: int) -> float:
        return audio_column_edge_s(w) + HOP / 2 / SAMPLE_RATE

    seams = []
    if idx[0] > 0:
        seams.append(col_start(int(idx[0])))
    if idx[-1] < grid[1] - 1:
        seams.append(col_start(int(idx[-1]) + 1))
    return seams


def inpaint_scores(waves: list[np.ndarray], sr: int, labels: list[str], span_s: tuple[float, float],
                   seams_s: list[float]) -> dict[str, Any]:
    """Inpainting: the class of each wave's `span_s` (audio oracle on that span alone) and the seam
    click measure. `accuracy` counts a clip right when the span has its class and no seam clicks."""
    truth = [syn.class_index(lab) for lab in labels]
    lo, hi = int(span_s[0] * sr), int(span_s[1] * sr)
    pred = [syn.classify_audio(np.asarray(w)[lo:hi], sr) for w in waves]
    clicks = [seam_click_db(w, sr, seams_s) for w in waves]
    ok = [p == t and c <= CLICK_DB for p, t, c in zip(pred, truth, clicks, strict=True)]
    out = _scores(truth, [p if o else -1 for p, o in zip(pred, ok, strict=True)])
    n = max(1, len(truth))
    out.update({"class_accuracy": sum(p == t for p, t in zip(pred, truth, strict=True)) / n,
                "click_free": sum(c <= CLICK_DB for c in clicks) / n,
                "seam_click_db_max": float(max(clicks)) if clicks else 0.0,
                "seam_click_db_median": float(np.median(clicks)) if clicks else 0.0,
                "span_s": list(span_s), "seams_s": [round(s, 4) for s in seams_s], "click_db_limit": CLICK_DB})
    return out


def joint_agreement(frames: list[np.ndarray], waves: list[np.ndarray], sr: int) -> dict[str, Any]:
    """Joint generation: the share of (image, sound) pairs whose oracles name the same class."""
    img = [classify_image(f)["class"] for f in frames]
    aud = [syn.classify_audio(w, sr) for w in waves]
    agree = [a == b and a >= 0 for a, b in zip(img, aud, strict=True)]
    n = max(1, len(agree))
    return {"agreement": sum(agree) / n, "n": len(agree), "image_classes": img, "audio_classes": aud,
            "image_has_class": sum(c >= 0 for c in img) / n}
