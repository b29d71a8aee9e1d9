"""Claiming an output folder for extract / tokenize: refuse someone else's folder, lock it, clear it.

An `--out` may be new, empty, or an earlier output of the same command (which the run resumes).
Anything else — a folder of the user's files, another command's output — is refused unless the
user asked for `--overwrite`; then only the files this command writes are removed first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from avtok.model.files import LOCK_NAME, folder_lock


class OutputFolderError(ValueError):
    """An --out this command must not write into; the message names it and says what to do."""


def _foreign_entries(out: Path, temp_patterns: Sequence[str]) -> list[Path]:
    # our own leftovers of a killed run (the lock, temporary files) do not make a folder foreign
    return [p for p in out.iterdir() if p.name != LOCK_NAME and not any(p.match(t) for t in temp_patterns)]


def check_output_folder(out: Path, is_ours: Callable[[Path], bool], command: str, overwrite: bool,
                        temp_patterns: Sequence[str] = ()) -> None:
    """Raise OutputFolderError if `out` is a file, or holds files and is not an output of `command`."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out {out}: is a file, not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputFolderError(f"--out {out}: {parent} is a file, not a folder")
            break
    if overwrite or not out.is_dir() or not _foreign_entries(out, temp_patterns) or is_ours(out):
        return
    raise OutputFolderError(f"--out {out}: holds files that are not an `avtok {command}` output; pick an empty "
                            "or new folder, or pass --overwrite to write into it anyway")


def remove_outputs(out: Path, patterns: Sequence[str]) -> list[Path]:
    """Delete the files of `out` matching `patterns` (this command's own names); returns them."""
    gone = sorted({p for pattern in patterns for p in out.glob(pattern) if p.is_file()})
    for path in gone:
        path.unlink()
    return gone


@contextlib.contextmanager
def claimed(out: Path, is_ours: Callable[[Path], bool], command: str, overwrite: bool,
            temp_patterns: Sequence[str] = ()) -> Iterator[Path]:
    """Check `out`, then hold its lock for the block (a second run stops at once, naming the holder).

    Temporary files of a killed run (`temp_patterns`) are removed only once the lock is held, so a
    run never deletes the in-flight files of another run on the same folder.
    """
    check_output_folder(out, is_ours, command, overwrite, temp_patterns)
    with folder_lock(out, command):
        remove_outputs(out, temp_patterns)
        yield out
