"""Manifests: the list of clips `extract` decodes, as rows (video_id, path, start_s, label, split);
the schema is described in data_manifests/README.md.

Builders: `from_videos(folder_or_glob)` and `from_vggsound(csv, clip_folder)` (the public VGGSound csv,
`ytid,start,label,split` without header, joined with downloaded clips named `{ytid}_{start:06d}.mp4`,
`{ytid}_{start}_{end}.mp4` or `{ytid}_{start_ms}_{end_ms}.mp4`). Files: `write_manifest` /
`read_manifest` for `.csv` (with header) or `.parquet`. Relative paths in a manifest file are
resolved against the folder holding it. CSVs are read as UTF-8 with or without a byte-order mark
(Excel writes one); a file that is not such text, a start that is not a finite number ≥ 0, or an
unreadable parquet is a ManifestError naming the file and row.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("video_id", "path", "start_s", "label", "split")
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".mpg", ".mpeg", ".flv", ".ts", ".wmv", ".3gp"}
MANIFEST_EXTENSIONS = {".csv", ".parquet"}


class ManifestError(ValueError):
    """A manifest or a builder's input that cannot be used (message says why)."""


@dataclass(frozen=True)
class ManifestRow:
    video_id: str
    path: str
    start_s: float = 0.0
    label: str = ""
    split: str = ""


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard (video ids are relative to it)."""
    parts = Path(pattern).parts
    fixed = []
    for p in parts:
        if glob.has_magic(p):
            break
        fixed.append(p)
    return Path(*fixed) if fixed else Path(".")


def list_videos(videos: str | os.PathLike) -> tuple[Path, list[Path]]:
    """(base folder, sorted files) for a folder (recursive, video extensions only) or a glob."""
    s = str(videos)
    p = Path(s)
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS]
        return p, sorted(files)
    if glob.has_magic(s):
        return _glob_base(s), sorted(Path(f) for f in glob.glob(s, recursive=True) if Path(f).is_file())
    if p.is_file():
        return p.parent, [p]
    raise ManifestError(f"{s!r} is neither a folder, a file nor a glob that matches anything")


def from_videos(videos: str | os.PathLike, label: str = "", split: str = "") -> list[ManifestRow]:
    """One row per video file: video_id = path relative to the folder/glob base, without extension
    (with it, where two files differ only by extension); start_s = 0."""
    base, files = list_videos(videos)
    if not files:
        raise ManifestError(f"no video files found in {str(videos)!r}")
    rels = [f.relative_to(base) if f.is_relative_to(base) else Path(f.name) for f in files]
    stems = [r.with_suffix("").as_posix() for r in rels]
    dup = {s for s in stems if stems.count(s) > 1}
    ids = [r.as_posix() if s in dup else s for r, s in zip(rels, stems, strict=True)]
    return [ManifestRow(i, str(f.resolve()), 0.0, label, split) for i, f in zip(ids, files, strict=True)]


@dataclass(frozen=True)
class VGGSoundRow:
    ytid: str
    start: int
    label: str
    split: str


def _csv_records(path: str | os.PathLike, header: bool) -> list:
    """All records of a UTF-8 csv (a byte-order mark is dropped): lists, or dicts with `header`."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f) if header else csv.reader(f))
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not a UTF-8 text csv (byte {exc.start} is 0x{exc.object[exc.start]:02x})") from None
    except csv.Error as exc:
        raise ManifestError(f"{path}: not a readable csv ({exc})") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror or exc})") from None


def parse_start(text: object, where: str) -> float:
    """A clip start in seconds: a finite number ≥ 0 (empty means 0); ManifestError naming `where` otherwise."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return 0.0
    try:
        start = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: start {text!r} is not a number") from None
    if not math.isfinite(start) or start < 0:
        raise ManifestError(f"{where}: start {text!r} must be a finite number of seconds ≥ 0")
    return start


def read_vggsound_csv(path: str | os.PathLike) -> list[VGGSoundRow]:
    """Parse the headerless VGGSound csv (`ytid,start,label,split`; labels may hold quoted commas)."""
    rows = []
    for lineno, rec in enumerate(_csv_records(path, header=False), 1):
        if not rec or all(not c.strip() for c in rec):
            continue
        if len(rec) != 4:
            raise ManifestError(f"{path}:{lineno}: expected 4 fields ytid,start,label,split, got {len(rec)}: {rec}")
        ytid, start, label, split = (c.strip() for c in rec)
        try:
            float(start)
        except ValueError:
            if lineno == 1:  # tolerate a header line
                continue
        start_i = int(parse_start(start, f"{path}:{lineno}"))
        rows.append(VGGSoundRow(ytid, start_i, label, split))
    return rows


# YouTube ids are 11 characters (they may contain "_" and "-"), then _start or _start_end.
_CLIP_NAME = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_(?P<a>\d+)(?:_(?P<b>\d+))?$")


def index_clip_folder(folder: str | os.PathLike) -> dict[tuple[str, int], Path]:
    """(ytid, start seconds) → clip path for every video in `folder` with a VGGSound-style name."""
    found: dict[tuple[str, int], Path] = {}
    _, files = list_videos(folder)
    for f in files:
        m = _CLIP_NAME.match(f.stem)
        if not m:
            continue
        a = int(m["a"])
        if m["b"] is not None and int(m["b"]) - a >= 1000:  # {start_ms}_{end_ms}
            a //= 1000
        found.setdefault((m["ytid"], a), f)
    return found


def from_vggsound(csv_path: str | os.PathLike, clips: str | os.PathLike) -> tuple[list[ManifestRow], list[VGGSoundRow]]:
    """Join the VGGSound csv with a folder of downloaded clips: (rows found, csv rows whose clip is missing).
    video_id = `{ytid}_{start:06d}`; start_s = 0 (the files are the 10 s clips already)."""
    table = read_vggsound_csv(csv_path)
    found = index_clip_folder(clips)
    rows, missing = [], []
    seen: set[str] = set()
    for r in table:
        vid = f"{r.ytid}_{r.start:06d}"
        f = found.get((r.ytid, r.start))
        if f is None:
            missing.append(r)
        elif vid not in seen:
            seen.add(vid)
            rows.append(ManifestRow(vid, str(f.resolve()), 0.0, r.label, r.split))
    return rows, missing


def check_rows(rows: list[ManifestRow]) -> None:
    """Raise ManifestError if video ids are empty or not unique, or a start is not a finite number ≥ 0."""
    seen: set[str] = set()
    for r in rows:
        if not r.video_id:
            raise ManifestError(f"empty video_id for {r.path!r}")
        parse_start(r.start_s, f"video_id {r.video_id!r}")
        if r.video_id in seen:
            raise ManifestError(f"video_id {r.video_id!r} appears twice; ids must be unique")
        seen.add(r.video_id)


def write_manifest(rows: list[ManifestRow], path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write rows as .parquet or .csv (chosen by the extension), atomically. With overwrite=False an
    existing file is left alone (ManifestError)."""
    check_rows(rows)
    path = Path(path)
    if path.suffix == ".parquet":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {c: [getattr(r, c) for r in rows] for c in COLUMNS}
        table = pa.table({c: pa.array(cols[c], pa.float64() if c == "start_s" else pa.string()) for c in COLUMNS})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
    elif path.suffix == ".csv":
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r.video_id, r.path, f"{r.start_s:g}", r.label, r.split])
        data = buf.getvalue().encode()
    else:
        raise ManifestError(f"manifest must end in .csv or .parquet, got {path.name!r}")
    _write_new(path, data, overwrite)
    return path


def _write_new(path: Path, data: bytes, overwrite: bool) -> None:
    from avtok.model.files import OutputError, write_output

    try:
        write_output(path, data, overwrite=overwrite)
    except OutputError as exc:
        raise ManifestError(str(exc)) from None


def write_missing(missing: list[VGGSoundRow], path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write the VGGSound csv rows that have no clip (same headerless format as the input csv)."""
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in missing:
        w.writerow([r.ytid, r.start, r.label, r.split])
    path = Path(path)
    _write_new(path, buf.getvalue().encode(), overwrite)
    return path


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Read a manifest (.csv with header or .parquet); video_id and path are required columns."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise ManifestError(f"{path}: not a readable parquet manifest ({str(exc).splitlines()[0]})") from None
    elif path.suffix == ".csv":
        records = _csv_records(path, header=True)
    else:
        raise ManifestError(f"manifest must end in .csv or .parquet, got {path.name!r}")
    rows = []
    for n, rec in enumerate(records, 1):
        if not rec.get("video_id") or not rec.get("path"):
            raise ManifestError(f"{path}: row {n} lacks video_id or path (columns: {', '.join(COLUMNS)})")
        p = Path(rec["path"])
        if not p.is_absolute():
            p = path.parent / p
        start = parse_start(rec.get("start_s"), f"{path}: row {n}")
        rows.append(ManifestRow(str(rec["video_id"]), str(p), start,
                                str(rec.get("label") or ""), str(rec.get("split") or "")))
    check_rows(rows)
    return rows


def load_inputs(videos: str | os.PathLike) -> list[ManifestRow]:
    """What `extract --videos` accepts: a manifest file (.csv/.parquet), a folder or a glob."""
    p = Path(str(videos))
    if p.suffix.lower() in MANIFEST_EXTENSIONS and p.is_file():
        return read_manifest(p)
    return from_videos(videos)
