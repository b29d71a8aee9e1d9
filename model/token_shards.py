"""The token-shard format (output of `avtok tokenize`, input of `avtok train`/`eval`): writer and reader.

`tokens/tokens-{n:06d}.parquet`, zstd, row groups of 1024 rows, columns
`video_id`, `label`, `split` (strings), `image_tokens` (fixed_size_list<uint16>[10·256], frame-major,
each frame row-major over 16×16) and `audio_tokens` (fixed_size_list<uint16>[265], row-major over
5×53, row 0 = lowest mel band). Each file's schema metadata and `tokens/index.json` record the grids,
codebook sizes, tokenizer kinds and fingerprints, mel parameters and (index only) every shard's rows
and sha256. The reader checks all of it and names the file and the mismatch when it refuses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .files import avtok_version, read_json, sha256_file, temp_path_for, write_json
from .geometry import AUDIO_GRID, AUDIO_ORDER, AUDIO_TOKENS, IMAGE_GRID, IMAGE_TOKENS, N_FRAMES

FORMAT = "avtok-tokens/1"
ROW_GROUP = 1024
# Keys of the metadata that every shard of one folder must share.
SHARED_KEYS = ("format", "frames", "image_grid", "audio_grid", "image_codebook", "audio_codebook",
               "image_tokenizer", "audio_tokenizer", "mel", "audio_order")


class ShardError(ValueError):
    """A token folder or shard that cannot be used; the message names the file and the problem."""


def shard_name(n: int) -> str:
    return f"tokens-{n:06d}.parquet"


def make_meta(image_tokenizer: dict[str, Any], audio_tokenizer: dict[str, Any], mel: dict[str, Any],
              image_codebook: int, audio_codebook: int) -> dict[str, Any]:
    """The metadata every shard and the index carry. Tokenizer dicts hold at least kind and fingerprint."""
    for name, tok in (("image_tokenizer", image_tokenizer), ("audio_tokenizer", audio_tokenizer)):
        if not {"kind", "fingerprint"} <= set(tok):
            raise ValueError(f"{name} must give 'kind' and 'fingerprint', got {sorted(tok)}")
    return {
        "format": FORMAT,
        "frames": N_FRAMES,
        "image_grid": list(IMAGE_GRID),
        "audio_grid": list(AUDIO_GRID),
        "image_codebook": int(image_codebook),
        "audio_codebook": int(audio_codebook),
        "image_tokenizer": dict(image_tokenizer),
        "audio_tokenizer": dict(audio_tokenizer),
        "mel": dict(mel),
        "audio_order": AUDIO_ORDER,
        "avtok_version": avtok_version(),
    }


def schema(meta: dict[str, Any]) -> pa.Schema:
    return pa.schema(
        [
            ("video_id", pa.string()),
            ("label", pa.string()),
            ("split", pa.string()),
            ("image_tokens", pa.list_(pa.uint16(), N_FRAMES * IMAGE_TOKENS)),
            ("audio_tokens", pa.list_(pa.uint16(), AUDIO_TOKENS)),
        ],
        metadata={b"avtok": json.dumps(meta, sort_keys=True).encode()},
    )


def _fixed_list(arr: np.ndarray, width: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(arr, dtype=np.uint16).reshape(-1), type=pa.uint16())
    return pa.FixedSizeListArray.from_arrays(flat, width)


def write_token_shard(path: str | os.PathLike, meta: dict[str, Any], video_ids: list[str], labels: list[str],
                      splits: list[str], image_tokens: np.ndarray, audio_tokens: np.ndarray) -> dict[str, Any]:
    """Write one token shard atomically. `image_tokens` [N, 10, 256], `audio_tokens` [N, 265], ids < 65536.

    Returns the shard's index entry (file, rows, sha256, rows per split).
    """
    n = len(video_ids)
    image_tokens = np.asarray(image_tokens)
    audio_tokens = np.asarray(audio_tokens)
    if image_tokens.shape != (n, N_FRAMES, IMAGE_TOKENS):
        raise ValueError(f"image_tokens must be [{n}, {N_FRAMES}, {IMAGE_TOKENS}], got {image_tokens.shape}")
    if audio_tokens.shape != (n, AUDIO_TOKENS):
        raise ValueError(f"audio_tokens must be [{n}, {AUDIO_TOKENS}], got {audio_tokens.shape}")
    if not (len(labels) == len(splits) == n):
        raise ValueError("video_ids, labels and splits must have the same length")
    for name, arr, size in (("image", image_tokens, meta["image_codebook"]),
                            ("audio", audio_tokens, meta["audio_codebook"])):
        if arr.size and (arr.min() < 0 or arr.max() >= size):
            raise ValueError(f"{name} tokens outside [0, {size}): min {arr.min()}, max {arr.max()}")
    table = pa.Table.from_arrays(
        [pa.array(video_ids, pa.string()), pa.array(labels, pa.string()), pa.array(splits, pa.string()),
         _fixed_list(image_tokens.reshape(n, N_FRAMES * IMAGE_TOKENS), N_FRAMES * IMAGE_TOKENS),
         _fixed_list(audio_tokens, AUDIO_TOKENS)],
        schema=schema(meta),
    )
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    split_counts: dict[str, int] = {}
    for s in splits:
        split_counts[s] = split_counts.get(s, 0) + 1
    return {"file": path.name, "rows": n, "sha256": sha256_file(path), "splits": split_counts}


def write_token_index(folder: str | os.PathLike, meta: dict[str, Any], entries: list[dict[str, Any]],
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `folder/index.json` from the shared metadata and the shards' entries (sorted by file)."""
    entries = sorted(entries, key=lambda e: e["file"])
    index = dict(meta)
    index.update(extra or {})
    index["shards"] = entries
    index["rows"] = sum(e["rows"] for e in entries)
    write_json(Path(folder) / "index.json", index)
    return index


def shard_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The avtok metadata stored in one shard's Parquet schema."""
    raw = pq.read_schema(path).metadata or {}
    if b"avtok" not in raw:
        raise ShardError(f"{path}: not an avtok token shard (no 'avtok' schema metadata)")
    return json.loads(raw[b"avtok"])


def load_token_index(folder: str | os.PathLike, verify_checksums: bool = True) -> dict[str, Any]:
    """Read and check `folder/index.json` and its shards; raise ShardError naming file and mismatch."""
    folder = Path(folder)
    index_path = folder / "index.json"
    if not folder.is_dir():
        raise ShardError(f"{folder}: no such token folder (run `avtok tokenize` first)")
    if not index_path.is_file():
        raise ShardError(f"{index_path}: missing; this is not a finished `avtok tokenize` output folder")
    try:
        index = read_json(index_path)
    except (OSError, json.JSONDecodeError) as e:
        raise ShardError(f"{index_path}: unreadable ({e})") from e
    if index.get("format") != FORMAT:
        raise ShardError(f"{index_path}: format {index.get('format')!r}, expected {FORMAT!r}")
    expected = {"frames": N_FRAMES, "image_grid": list(IMAGE_GRID), "audio_grid": list(AUDIO_GRID)}
    for key, want in expected.items():
        if index.get(key) != want:
            raise ShardError(f"{index_path}: {key} is {index.get(key)!r}, this avtok needs {want!r}")
    if not index.get("shards"):
        raise ShardError(f"{index_path}: lists no shards")
    for entry in index["shards"]:
        path = folder / entry["file"]
        if not path.is_file():
            raise ShardError(f"{path}: listed in index.json but missing")
        if verify_checksums:
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                raise ShardError(f"{path}: sha256 {digest} does not match index.json ({entry['sha256']}); "
                                 "the file changed after tokenize wrote it")
        meta = shard_meta(path)
        for key in SHARED_KEYS:
            if meta.get(key) != index.get(key):
                raise ShardError(f"{path}: {key} is {meta.get(key)!r} but index.json says {index.get(key)!r} "
                                 "(shards from different tokenizers or settings are mixed)")
    return index


@dataclass
class TokenData:
    """All clips of one split in memory. image [N, 10, 256] and audio [N, 265] uint16."""

    video_ids: list[str]
    labels: list[str]
    image: np.ndarray
    audio: np.ndarray
    index: dict[str, Any]

    def __len__(self) -> int:
        return len(self.video_ids)


def _check_token_range(path: Path, index: dict[str, Any], image: np.ndarray, audio: np.ndarray) -> None:
    """ShardError if a token id is not below its codebook size (it would index past the model's embedding)."""
    for name, arr, key in (("image", image, "image_codebook"), ("audio", audio, "audio_codebook")):
        if arr.size and int(arr.max()) >= int(index[key]):
            raise ShardError(f"{path}: {name} token {int(arr.max())} is outside the {name} codebook of "
                             f"{index[key]} entries; the shard is damaged or was not made by this tokenizer")


def load_tokens(folder: str | os.PathLike, split: str | None = "train", verify_checksums: bool = True) -> TokenData:
    """Read every shard of `folder` (checked as load_token_index does) and keep rows of `split` (None: all)."""
    index = load_token_index(folder, verify_checksums=verify_checksums)
    ids: list[str] = []
    labels: list[str] = []
    images: list[np.ndarray] = []
    audios: list[np.ndarray] = []
    for entry in index["shards"]:
        table = pq.read_table(Path(folder) / entry["file"])
        if split is not None:
            table = table.filter(pc.equal(table["split"], split))
        n = table.num_rows
        if n == 0:
            continue
        ids += table["video_id"].to_pylist()
        labels += table["label"].to_pylist()
        img = table["image_tokens"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        aud = table["audio_tokens"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        _check_token_range(Path(folder) / entry["file"], index, img, aud)
        images.append(img.reshape(n, N_FRAMES, IMAGE_TOKENS))
        audios.append(aud.reshape(n, AUDIO_TOKENS))
    if not ids:
        raise ShardError(f"{folder}: no rows with split {split!r}")
    return TokenData(ids, labels, np.concatenate(images).astype(np.uint16),
                     np.concatenate(audios).astype(np.uint16), index)
