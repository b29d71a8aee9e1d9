"""The extracted-shard format (output of `avtok extract`, input of `avtok tokenize`): writer and reader.

One WebDataset tar per manifest shard, `shard-{n:06d}.tar` (PAX headers, so names of any length).
Per sample (key = sanitised video_id, unique within the extraction; the original video_id is in
the json): `frame{i}.jpg` (i = 0..9, RGB 256×256, quality 95), `mel.npy` (float16 spec01, 80×848), `json`
(metadata and warnings) and, with --keep-audio, `audio.flac` (22050 Hz mono, 10 s).
Tar members carry a fixed mtime/uid/gid/uname so a re-run writes byte-identical files.
Every consumer (tokenize, fit-kmeans, the demo, eval's reference audio) reads through
`iter_raw_samples` / `read_extracted_shard` here. Format: docs/formats.md.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from avtok.model.files import temp_path_for
from avtok.model.geometry import FRAME_SIZE, JPEG_QUALITY, MEL_PARAMS, MEL_SHAPE, N_FRAMES

FIXED_MTIME = 946684800  # 2000-01-01, any constant works (an int: a float adds a PAX record per member)

_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-]")


def shard_name(n: int) -> str:
    return f"shard-{n:06d}.tar"


def sanitize_key(video_id: str) -> str:
    """A WebDataset-safe key: no dots (they split extensions), no path separators, ASCII only."""
    key = _KEY_BAD.sub("_", video_id)
    return key or "_"


@dataclass
class ExtractedSample:
    """One clip as stored in an extracted shard."""

    key: str
    frames: np.ndarray  # uint8 [10, 256, 256, 3]
    mel: np.ndarray  # float16 [80, 848], spec01 in [0, 1]
    meta: dict[str, Any] = field(default_factory=dict)
    audio: np.ndarray | None = None  # float32 [220500] at 22050 Hz, when kept


def _encode_jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _encode_flac(audio: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _decode_flac(data: bytes) -> np.ndarray:
    import soundfile as sf

    audio, _ = sf.read(io.BytesIO(data), dtype="float32")
    return audio


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def sample_members(sample: ExtractedSample) -> list[tuple[str, bytes]]:
    """The members (extension, bytes) of one sample; the tar name of each is `{key}.{extension}`."""
    if sample.frames.shape != (N_FRAMES, FRAME_SIZE, FRAME_SIZE, 3) or sample.frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 {(N_FRAMES, FRAME_SIZE, FRAME_SIZE, 3)}, got "
                         f"{sample.frames.dtype} {sample.frames.shape}")
    if sample.mel.shape != MEL_SHAPE:
        raise ValueError(f"mel must be {MEL_SHAPE}, got {sample.mel.shape}")
    members = [(f"frame{i}.jpg", _encode_jpeg(sample.frames[i])) for i in range(N_FRAMES)]
    members.append(("mel.npy", _npy_bytes(sample.mel.astype(np.float16))))
    members.append(("json", json.dumps(sample.meta, sort_keys=True).encode()))
    if sample.audio is not None:
        members.append(("audio.flac", _encode_flac(sample.audio, MEL_PARAMS["sample_rate"])))
    return members


def write_extracted_shard(path: str | os.PathLike, samples: Iterable[ExtractedSample]) -> int:
    """Write samples to `path` atomically (temp name, then rename); returns the sample count.

    webdataset's TarWriter with PAX headers (member names of any length and any unicode) and fixed
    mtime/uid/gid/uname/mode, so the same samples always give the same bytes.
    """
    from webdataset import TarWriter

    path = Path(path)
    tmp = temp_path_for(path)
    count = 0
    try:
        with open(tmp, "wb") as f:
            writer = TarWriter(f, user="avtok", group="avtok", mode=0o444, encoder=False, mtime=FIXED_MTIME)
            writer.tarstream.format = tarfile.PAX_FORMAT  # TarWriter does not pass its format= on
            with writer:
                for sample in samples:
                    writer.write({"__key__": sample.key, **dict(sample_members(sample))})
                    count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def iter_raw_samples(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample of one extracted shard, in stored order, nothing decoded.

    webdataset's tar reader: members are grouped by the key before the first dot of their name.
    """
    from webdataset.tariterators import group_by_keys, tar_file_expander

    with open(path, "rb") as f:
        for sample in group_by_keys(tar_file_expander([{"url": str(path), "stream": f}])):
            key = sample.pop("__key__")
            yield key, {ext: data for ext, data in sample.items() if not ext.startswith("__")}


def decode_sample(key: str, members: dict[str, bytes], decode_frames: bool = True,
                  decode_audio: bool = True) -> ExtractedSample:
    """Decode one sample's members; raises ValueError naming what is missing or misshapen. Readers that
    never use the kept sound pass decode_audio=False (its FLAC is the dearest member to decode)."""
    meta = json.loads(members["json"]) if "json" in members else {}
    meta.setdefault("video_id", key)
    frames = None
    if decode_frames:
        missing = [i for i in range(N_FRAMES) if f"frame{i}.jpg" not in members]
        if missing:
            raise ValueError(f"{key}: frame{missing[0]}.jpg missing")
        frames = np.stack([_decode_jpeg(members[f"frame{i}.jpg"]) for i in range(N_FRAMES)])
        if frames.shape != (N_FRAMES, FRAME_SIZE, FRAME_SIZE, 3):
            raise ValueError(f"{key}: frames have shape {frames.shape}, "
                             f"expected {(N_FRAMES, FRAME_SIZE, FRAME_SIZE, 3)}")
    if "mel.npy" not in members:
        raise ValueError(f"{key}: mel.npy missing")
    mel = np.load(io.BytesIO(members["mel.npy"]), allow_pickle=False)
    if mel.shape != MEL_SHAPE:
        raise ValueError(f"{key}: mel has shape {mel.shape}, expected {MEL_SHAPE}")
    audio = _decode_flac(members["audio.flac"]) if decode_audio and "audio.flac" in members else None
    return ExtractedSample(key, frames, mel, meta, audio)


def read_extracted_shard(path: str | os.PathLike, decode_frames: bool = True,
                         decode_audio: bool = True) -> Iterator[ExtractedSample]:
    """Yield the samples of one extracted shard in stored order."""
    for key, members in iter_raw_samples(path):
        yield decode_sample(key, members, decode_frames, decode_audio)


def read_clip_audio(extracted: str | os.PathLike, video_ids: Iterable[str]) -> dict[str, np.ndarray]:
    """video_id → the clip's 22050 Hz waveform (audio.flac, written with --keep-audio) for the ids asked."""
    want = set(video_ids)
    found: dict[str, np.ndarray] = {}
    for tar_path in sorted(Path(extracted).glob("shard-*.tar")):
        for key, members in iter_raw_samples(tar_path):
            if "json" not in members or "audio.flac" not in members:
                continue
            vid = json.loads(members["json"]).get("video_id", key)
            if vid in want:
                found[vid] = _decode_flac(members["audio.flac"])
    return found
