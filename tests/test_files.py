"""The output-folder lock and atomic writes shared by every stage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from avtok.model.files import LOCK_NAME, FolderLockedError, atomic_write_bytes, folder_lock

HOLD = "import sys, time\nfrom avtok.model.files import folder_lock\nwith folder_lock(sys.argv[1], 'holder'):\n" \
       "    print('held', flush=True)\n    time.sleep(60)\n"


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_is_refused_naming_the_holder_then_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    try:
        with pytest.raises(FolderLockedError) as err:
            with folder_lock(tmp_path, "mine"):
                pass
        assert f"pid {proc.pid} " in str(err.value) and "holder" in str(err.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the dead holder left its lock file behind: the next run takes it over at once
    assert (tmp_path / LOCK_NAME).exists()
    t0 = time.monotonic()
    with folder_lock(tmp_path, "mine"):
        assert f"pid {os.getpid()} " in (tmp_path / LOCK_NAME).read_text()
    assert time.monotonic() - t0 < 5


def test_lock_creates_the_folder_and_is_reentrant_after_release(tmp_path: Path) -> None:
    target = tmp_path / "new" / "out"
    with folder_lock(target, "a"):
        assert target.is_dir()
    with folder_lock(target, "b"):
        pass


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")
    atomic_write_bytes(path, b"new contents")
    assert path.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
