"""`avtok inspect`: what an extracted folder or a token folder holds, as a contact sheet, wavs and statistics.

Extracted shards are read only through `avtok.pipeline.extracted` (`read_extracted_shard`,
`iter_raw_samples`) and token shards through `avtok.model.token_shards.load_tokens`. For a token
folder the sheet shows the tokens decoded by the tokenizers its index.json names (what the model
sees). Sheet layout, per sample: a header line, the 10 frames at 256×256 side by side, then the
mel (low bands at the bottom) scaled ×MEL_SCALE with nearest-neighbour; see `sample_boxes`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from avtok.model.files import read_json
from avtok.model.geometry import FRAME_SIZE, MEL_SHAPE, N_FRAMES

MARGIN, GAP, HEADER, MEL_SCALE = 8, 4, 22, 2
SHEET_WIDTH = 2 * MARGIN + N_FRAMES * FRAME_SIZE + (N_FRAMES - 1) * GAP
ROW_HEIGHT = HEADER + FRAME_SIZE + GAP + MEL_SHAPE[0] * MEL_SCALE + MARGIN


class InspectError(ValueError):
    """A folder that cannot be inspected; the message names it."""


@dataclass
class Shown:
    """One sample on the sheet: frames uint8 [10, 256, 256, 3], spec01 [80, 848], a waveform, a caption."""

    video_id: str
    caption: str
    frames: np.ndarray
    mel: np.ndarray
    wave: np.ndarray | None = None


@dataclass
class Inspection:
    kind: str  # "extracted" | "tokens"
    folder: Path
    stats: dict[str, Any]
    shown: list[Shown] = field(default_factory=list)
    sheet: np.ndarray | None = None  # uint8 [H, SHEET_WIDTH, 3]


def preview_vocoder(path: str | os.PathLike | None = None, device: Any = "cpu", fast: bool = True) -> Callable:
    """spec01 [B, 80, T] -> waveform [B, T·256]: a MelGAN/HiFi-GAN file, else Griffin-Lim
    (fast: from the clamped pseudo-inverse of the mel basis instead of NNLS, ~3× cheaper on CPU)."""
    from avtok.model.vocoder import griffin_lim_vocoder, load_vocoder

    if path is None and fast:
        import torch

        return lambda spec01: griffin_lim_vocoder(torch.as_tensor(spec01).float(), nnls_iters=0)
    return load_vocoder(path, device=device)


def folder_kind(folder: str | os.PathLike) -> str:
    """"extracted" or "tokens", from the folder's index.json; InspectError otherwise."""
    folder = Path(folder)
    index = folder / "index.json"
    if not folder.is_dir():
        raise InspectError(f"{folder}: no such folder")
    if not index.is_file():
        raise InspectError(f"{folder}: no index.json; not an `avtok extract` or `avtok tokenize` output folder")
    try:
        meta = read_json(index)
    except (OSError, ValueError) as e:
        raise InspectError(f"{index}: unreadable ({e})") from e
    if meta.get("kind") == "avtok-extracted":
        return "extracted"
    if str(meta.get("format", "")).startswith("avtok-tokens/"):
        return "tokens"
    raise InspectError(f"{index}: neither an extracted nor a token folder's index")


def inspect_folder(folder: str | os.PathLike, samples: int = 4, vocoder: Callable | None = None,
                   image_tokenizer: str | os.PathLike | None = None, audio_tokenizer: str | os.PathLike | None = None,
                   progress: Callable[[int, int], None] | None = None) -> Inspection:
    """Statistics of the whole folder, plus the first `samples` clips decoded, vocoded and drawn on a sheet.

    progress(shards_read, shards) is called while an extracted folder's shards are counted."""
    folder = Path(folder)
    kind = folder_kind(folder)
    vocoder = vocoder or preview_vocoder()
    if kind == "extracted":
        stats, shown = _extracted_stats(folder, progress), _extracted_samples(folder, samples, vocoder)
    else:
        stats, shown = _token_folder(folder, samples, vocoder, image_tokenizer, audio_tokenizer)
    ins = Inspection(kind, folder, stats, shown)
    ins.sheet = contact_sheet(shown)
    return ins


# ------------------------------------------------------------------------------------------- extracted
def _tars(folder: Path) -> list[Path]:
    tars = sorted(folder.glob("*.tar"))
    if not tars:
        raise InspectError(f"{folder}: holds no shards")
    return tars


def warning_kind(text: str) -> str:
    """A warning with its numbers blanked ("audio is 4.00 s < 10 s" -> "audio is # s < # s"), to count by kind."""
    return re.sub(r"\d+(\.\d+)?", "#", text)


def _extracted_stats(folder: Path, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    from .extracted import iter_raw_samples

    labels: Counter = Counter()
    splits: Counter = Counter()
    warn_kinds: Counter = Counter()
    clips = warned = 0
    tars = _tars(folder)
    for done, tar in enumerate(tars, 1):
        for _key, members in iter_raw_samples(tar):
            meta = json.loads(members["json"]) if "json" in members else {}
            clips += 1
            labels[str(meta.get("label", ""))] += 1
            splits[str(meta.get("split", ""))] += 1
            warnings = meta.get("warnings") or []
            warned += bool(warnings)
            warn_kinds.update(warning_kind(w) for w in warnings)
        if progress is not None:
            progress(done, len(tars))
    index = read_json(folder / "index.json")
    return {"kind": "extracted", "folder": str(folder), "clips": clips, "shards": len(tars),
            "videos": index.get("counts", {}).get("videos"), "keep_audio": bool(index.get("keep_audio")),
            "errors": _error_counts(folder / "errors.parquet"),
            "warnings": {"clips": warned, "total": sum(warn_kinds.values()), "by_kind": dict(warn_kinds)},
            "labels": dict(sorted(labels.items())), "splits": dict(sorted(splits.items()))}


def _error_counts(path: Path) -> dict[str, Any]:
    """{"total", "by_kind", "by_stage"} from errors.parquet (absent file: no errors recorded)."""
    if not path.is_file():
        return {"total": 0, "by_kind": {}, "by_stage": {}}
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["kind", "stage"])
    kinds, stages = table["kind"].to_pylist(), table["stage"].to_pylist()
    return {"total": len(kinds), "by_kind": dict(Counter(kinds)), "by_stage": dict(Counter(stages))}


def _iter_extracted(folder: Path) -> Iterator:
    from .extracted import read_extracted_shard

    for tar in _tars(folder):
        yield from read_extracted_shard(tar)


def _extracted_samples(folder: Path, samples: int, vocoder: Callable) -> list[Shown]:
    shown = []
    for s in itertools.islice(_iter_extracted(folder), samples):
        wave = s.audio if s.audio is not None else np.asarray(vocoder(s.mel.astype(np.float32)[None]))[0]
        shown.append(Shown(s.meta.get("video_id", s.key), _caption(s.meta), s.frames, s.mel,
                           np.asarray(wave, np.float32)))
    return shown


def _caption(meta: dict[str, Any]) -> str:
    parts = [str(meta.get("video_id", "")), f"label {meta.get('label') or '-'}", f"split {meta.get('split') or '-'}"]
    if meta.get("warnings"):
        parts.append("warnings: " + "; ".join(meta["warnings"]))
    return " | ".join(parts)


# ------------------------------------------------------------------------------------------- tokens
def _tokenizer_for(record: dict[str, Any], modality: str, override: str | os.PathLike | None):
    from avtok.model.tokenizers import load_tokenizer

    path = Path(override) if override is not None else Path(record.get("path", ""))
    if not path.is_file():
        raise InspectError(f"{modality} tokenizer {str(path)!r} (named in index.json) not found; "
                           f"pass --{modality}-tokenizer FILE")
    tok = load_tokenizer(path, record["kind"], modality=record.get("modality", modality))
    if tok.fingerprint != record.get("fingerprint"):
        raise InspectError(f"{path}: {modality} tokenizer fingerprint {tok.fingerprint[:12]} differs from "
                           f"index.json's {str(record.get('fingerprint'))[:12]}")
    return tok


def token_usage(tokens: np.ndarray, codebook: int) -> dict[str, Any]:
    """How a modality uses its codebook: codes used, entropy of the code histogram (bits), its maximum."""
    counts = np.bincount(np.asarray(tokens, np.int64).ravel(), minlength=codebook)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log2(p)).sum())
    return {"codebook": int(codebook), "used": int((counts > 0).sum()), "entropy_bits": round(entropy, 4),
            "max_bits": round(math.log2(codebook), 4), "perplexity": round(2.0 ** entropy, 2)}


def _token_folder(folder: Path, samples: int, vocoder: Callable, image_tokenizer, audio_tokenizer):
    import torch
    from avtok.model.token_shards import ShardError, load_tokens
    from avtok.model.tokenizers import output_to_frames, output_to_spec01

    try:
        data = load_tokens(folder, split=None)
    except ShardError as e:
        raise InspectError(str(e)) from None
    index = data.index
    errors = index.get("errors") or []
    stats = {"kind": "tokens", "folder": str(folder), "clips": len(data), "shards": len(index["shards"]),
             "errors": {"total": len(errors),
                        "by_kind": dict(Counter(str(e.get("error", "")).split(":")[0] for e in errors))},
             "labels": dict(sorted(Counter(data.labels).items())),
             "splits": dict(sorted(sum((Counter(e.get("splits", {})) for e in index["shards"]), Counter()).items())),
             "tokenizers": {m: {k: index[f"{m}_tokenizer"].get(k) for k in ("kind", "fingerprint", "path")}
                            for m in ("image", "audio")},
             "token_usage": {"image": token_usage(data.image, index["image_codebook"]),
                             "audio": token_usage(data.audio, index["audio_codebook"])}}
    n = min(samples, len(data))
    if n == 0:
        return stats, []
    img_tok = _tokenizer_for(index["image_tokenizer"], "image", image_tokenizer)
    aud_tok = _tokenizer_for(index["audio_tokenizer"], "audio", audio_tokenizer)
    with torch.no_grad():
        frames = output_to_frames(img_tok.decode(torch.from_numpy(data.image[:n].reshape(n * N_FRAMES, -1)
                                                                  .astype(np.int64))))
        mels = output_to_spec01(aud_tok.decode(torch.from_numpy(data.audio[:n].astype(np.int64))))
    waves = np.asarray(vocoder(mels), np.float32)
    shown = [Shown(data.video_ids[i], _caption({"video_id": data.video_ids[i], "label": data.labels[i],
                                                "split": "-"}) + " | decoded tokens",
                   frames[i * N_FRAMES:(i + 1) * N_FRAMES], mels[i], waves[i]) for i in range(n)]
    return stats, shown


# ------------------------------------------------------------------------------------------- drawing
def sample_boxes(row: int) -> dict[str, Any]:
    """Where sample `row` sits on the sheet: {"frames": [(y, x)] top-left of each 256×256 frame,
    "mel": (y, x, height, width)} of the colour mel scaled ×MEL_SCALE."""
    top = MARGIN + row * ROW_HEIGHT + HEADER
    frames = [(top, MARGIN + i * (FRAME_SIZE + GAP)) for i in range(N_FRAMES)]
    mel = (top + FRAME_SIZE + GAP, MARGIN, MEL_SHAPE[0] * MEL_SCALE, MEL_SHAPE[1] * MEL_SCALE)
    return {"frames": frames, "mel": mel}


def contact_sheet(shown: list[Shown]) -> np.ndarray:
    """uint8 [MARGIN + rows·ROW_HEIGHT, SHEET_WIDTH, 3] on white: per sample a caption, its frames and mel."""
    from avtok.model.generate import colorize
    from PIL import Image, ImageDraw, ImageFont

    sheet = np.full((MARGIN + max(len(shown), 1) * ROW_HEIGHT, SHEET_WIDTH, 3), 255, np.uint8)
    for row, s in enumerate(shown):
        boxes = sample_boxes(row)
        for (y, x), frame in zip(boxes["frames"], s.frames, strict=True):
            sheet[y:y + FRAME_SIZE, x:x + FRAME_SIZE] = frame
        y, x, h, w = boxes["mel"]
        sheet[y:y + h, x:x + w] = np.repeat(np.repeat(colorize(s.mel), MEL_SCALE, 0), MEL_SCALE, 1)
    im = Image.fromarray(sheet)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=14)
    for row, s in enumerate(shown):
        draw.text((MARGIN, MARGIN + row * ROW_HEIGHT + 2), s.caption[:300], fill=(0, 0, 0), font=font)
    return np.asarray(im)


def write_inspection(ins: Inspection, out: str | os.PathLike) -> list[Path]:
    """OUT/contact_sheet.png, OUT/stats.json and OUT/wav/{i}-{video_id}.wav; returns the files written."""
    from avtok.model.files import atomic_write_bytes, write_json

    from .media import png_bytes, wav_bytes

    out = Path(out)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    written = [out / "contact_sheet.png", out / "stats.json"]
    atomic_write_bytes(written[0], png_bytes(ins.sheet))
    write_json(written[1], ins.stats)
    for i, s in enumerate(ins.shown):
        path = out / "wav" / f"{i}-{re.sub(r'[^A-Za-z0-9_-]', '_', s.video_id)[:80]}.wav"
        atomic_write_bytes(path, wav_bytes(s.wave))
        written.append(path)
    return written
