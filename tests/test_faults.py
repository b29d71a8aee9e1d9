"""Fault tests with real processes: killed Ray workers, a two-node Ray cluster on one machine,
a training process killed while it writes a checkpoint, and a token shard changed on disk.

Every process a test starts is started in its own session and ended by its id (never `ray stop`,
which would also stop other people's Ray instances on a shared machine); every wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from avtok.model import token_shards as shards
from avtok.model.files import LOCK_NAME
from avtok.pipeline.extracted import read_extracted_shard
from avtok.pipeline.runner import RayWorker
from media import make_clip, make_junk

BIN = Path(sys.executable).parent  # the venv's console scripts: avtok, ray, torchrun
# A Ray worker's process title while it runs one of the runner's shard tasks (`ray::IDLE` otherwise).
TASK_TITLE = f"ray::{RayWorker.__name__}.run"


def exe(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name) or name


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that points Ray at another cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", **extra)
    return env


# --- processes --------------------------------------------------------------------------------


def proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, cmdline) for every process we can read (Linux /proc)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # exited while we looked
            continue
        table[int(name)] = (int(fields[1]), int(fields[2]), cmdline)
    return table


def descendants(root: int, table: dict[int, tuple[int, int, str]] | None = None) -> list[int]:
    table = table if table is not None else proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def end_process_tree(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM `proc` (started with start_new_session=True), wait, then SIGKILL what is left of it:
    its session and every descendant seen before the SIGTERM (Ray workers run in sessions of their own)."""
    before = proc_table()
    tree = {pid: before[pid][2] for pid in descendants(proc.pid, before)}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    after = proc_table()
    leftovers = [pid for pid, (_, pgid, cmd) in after.items() if pgid == proc.pid or tree.get(pid) == cmd]
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.wait(10)


# --- token shards -----------------------------------------------------------------------------

TOKENIZER = {"kind": "patch-kmeans", "fingerprint": "0" * 64, "path": "/nonexistent/kmeans.safetensors",
             "codebook_size": 64}


def make_token_folder(folder: Path, n_shards: int = 2, rows: int = 24, codebook: int = 64,
                      test_split: bool = True) -> dict:
    """A small, valid token folder (index.json + shards) with random tokens; returns the index.

    Without a test split `avtok train` skips its evaluation (which would dominate these tests' time).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    meta = shards.make_meta(image_tokenizer=dict(TOKENIZER, modality="image"),
                            audio_tokenizer=dict(TOKENIZER, modality="audio"),
                            mel={"sr": 22050, "n_fft": 1024, "hop": 256, "n_mels": 80},
                            image_codebook=codebook, audio_codebook=codebook)
    entries = []
    for n in range(n_shards):
        ids = [f"clip{n}_{i:03d}" for i in range(rows)]
        splits = ["test" if test_split and i % 6 == 0 else "train" for i in range(rows)]
        entries.append(shards.write_token_shard(
            folder / shards.shard_name(n), meta, ids, ["label"] * rows, splits,
            rng.integers(0, codebook, (rows, shards.N_FRAMES, shards.IMAGE_TOKENS)),
            rng.integers(0, codebook, (rows, shards.AUDIO_TOKENS))))
    return shards.write_token_index(folder, meta, entries)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_changed_token_shard_is_refused_naming_file_and_checksums(tmp_path):
    index = make_token_folder(tmp_path / "tokens")
    victim = tmp_path / "tokens" / shards.shard_name(1)
    recorded = index["shards"][1]["sha256"]
    assert shards.load_tokens(tmp_path / "tokens", split="train").image.shape == (40, 10, 256)
    # One bit in the middle of the file (inside the token data, not the footer), as a failing disk or
    # a careless edit would leave it: the checksum catches it before any decoding is attempted.
    flip_byte(victim, victim.stat().st_size // 2)
    actual = hashlib.sha256(victim.read_bytes()).hexdigest()
    assert actual != recorded
    with pytest.raises(shards.ShardError) as err:
        shards.load_tokens(tmp_path / "tokens", split="train")
    message = str(err.value)
    assert str(victim) in message and actual in message and recorded in message
    # Flipping it back makes the folder usable again: the check is on content, not on mtime.
    flip_byte(victim, victim.stat().st_size // 2)
    assert len(shards.load_tokens(tmp_path / "tokens", split=None)) == 48


# --- extraction -------------------------------------------------------------------------------

N_CLIPS = 18  # good clips; plus one junk file that must end in errors.parquet
SHARD_SIZE = 3  # 19 rows -> 7 shards: several tasks per worker, so a kill lands mid-run


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    first = make_clip(folder / "clip00.mp4", duration=10, size=(320, 180))
    for i in range(1, N_CLIPS):  # copies decode the same; they are distinct videos to the manifest
        shutil.copyfile(first, folder / f"clip{i:02d}.mp4")
    make_junk(folder / "junk.mp4")
    return folder


def run_logged(cmd: list[str], log: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            proc.wait(timeout)
        finally:
            end_process_tree(proc, grace_s=10)
    return subprocess.CompletedProcess(cmd, proc.returncode, log.read_text())


def check_every_clip_once(videos: Path, out: Path) -> dict:
    """Every input video is exactly one sample or one errors.parquet row; returns index.json."""
    samples = []
    for tar in sorted(out.glob("shard-*.tar")):
        samples += [s.meta["video_id"] for s in read_extracted_shard(tar, decode_frames=False)]
    errors = pq.read_table(out / "errors.parquet").column("video_id").to_pylist()
    assert len(samples) == len(set(samples)), "a clip was written twice"
    assert not set(samples) & set(errors), "a clip is both a sample and an error"
    expected = {f"clip{i:02d}" for i in range(N_CLIPS)} | {"junk"}
    assert set(samples) | set(errors) == expected
    assert errors == ["junk"]
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] is True
    assert index["counts"]["samples"] == N_CLIPS and index["counts"]["errors"] == 1
    n_shards = -(-(N_CLIPS + 1) // SHARD_SIZE)
    assert sorted(p.name for p in out.glob("shard-*.stats.json")) == [
        f"shard-{n:06d}.stats.json" for n in range(n_shards)]
    return index


def extract_cmd(videos: Path, out: Path, *extra: str) -> list[str]:
    return [exe("avtok"), "extract", "--videos", str(videos), "--out", str(out),
            "--shard-size", str(SHARD_SIZE), *extra]


@pytest.mark.slow
def test_ray_worker_killed_mid_extract_loses_and_duplicates_nothing(videos, tmp_path):
    out = tmp_path / "extracted"
    log = tmp_path / "extract.log"
    cmd = extract_cmd(videos, out, "--workers", "2", "--max-retries", "3")
    killed: list[str] = []
    first_busy = None
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while proc.poll() is None and time.monotonic() < deadline:
                # SIGKILL a Ray worker while it runs a shard task (its process title is TASK_TITLE
                # only while it executes one): preferably once a shard has finished (mid-run), at
                # the latest one second after the first task started.
                if not killed:
                    table = proc_table()
                    busy = [pid for pid in descendants(proc.pid, table)
                            if table[pid][2].startswith(TASK_TITLE)]
                    if busy and first_busy is None:
                        first_busy = time.monotonic()
                    if busy and (any(out.glob("*.stats.json")) or time.monotonic() - first_busy > 1.0):
                        os.kill(busy[0], signal.SIGKILL)
                        killed.append(table[busy[0]][2])
                time.sleep(0.02)
            assert proc.poll() is not None, f"extract did not finish in time:\n{log.read_text()[-3000:]}"
        finally:
            end_process_tree(proc, grace_s=10)
    output = log.read_text()
    assert killed, f"never caught a worker running a shard:\n{output[-3000:]}"
    assert proc.returncode == 0, output[-3000:]
    assert f"Task {RayWorker.__name__}.run failed" in output  # Ray saw the crash and retried that shard
    assert f"extracted {N_CLIPS}/{N_CLIPS + 1} videos (1 errors" in output
    assert "FAILED" not in output
    index = check_every_clip_once(videos, out)
    # The killed task's partial tar (or its stats file, when the kill lands while that is written) can
    # stay behind only under its hidden temporary name (beside the folder's lock file, which stays so
    # that a waiting run never races its removal).
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME]
    assert all(re.fullmatch(r"\.shard-\d{6}\.(tar|stats\.json)\..+\.tmp", name) for name in hidden), hidden
    # A re-run redoes nothing and changes nothing.
    again = run_logged(cmd, tmp_path / "again.log", clean_env(), timeout=120)
    assert again.returncode == 0, again.stdout[-3000:]
    assert f"[0 run, {len(index['shards'])} already done]" in again.stdout
    assert json.loads((out / "index.json").read_text())["shards"] == index["shards"]
    check_every_clip_once(videos, out)


class TwoNodeCluster:
    """A Ray head and a second Ray node on this machine (each `ray start --block` in its own session)."""

    def __init__(self, root: Path):
        self.env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
        # Own temp dirs (short: Ray puts unix sockets there): Ray records "the current cluster" in
        # its temp dir, so another `ray.init()` on this machine never attaches to this cluster.
        self.temp = [tempfile.mkdtemp(prefix="avtok-ray", dir="/tmp") for _ in range(2)]
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []
        self.root = root
        self.address = ""

    def _start(self, i: int, args: list[str]) -> subprocess.Popen:
        log = open(self.root / f"ray-node{i}.log", "w")
        self.logs.append(log)
        proc = subprocess.Popen(
            [exe("ray"), "start", *args, "--num-cpus", "1", "--object-store-memory", str(100 * 2**20),
             "--temp-dir", self.temp[i], "--disable-usage-stats", "--block"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(proc)
        # `ray start` writes the cluster address into its temp dir once the node is up.
        marker = Path(self.temp[i]) / "ray_current_cluster"
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert proc.poll() is None, (self.root / f"ray-node{i}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "ray start did not come up in 90 s"
            time.sleep(0.2)
        time.sleep(0.2)  # the file is written in one go, but give the writer its close()
        return proc

    def start(self) -> None:
        # 127.0.0.1: Ray itself swaps a loopback address for this host's own IP; traffic stays on
        # this machine either way.
        self._start(0, ["--head", "--node-ip-address", "127.0.0.1", "--port", str(free_port()),
                        "--include-dashboard", "false", "--resources", '{"avtok_test_head": 1}'])
        self.address = (Path(self.temp[0]) / "ray_current_cluster").read_text().strip()
        self._start(1, ["--address", self.address, "--node-ip-address", "127.0.0.1",
                        "--resources", '{"avtok_test_worker": 1}'])

    def node_of(self, pid: int, table: dict[int, tuple[int, int, str]]) -> int | None:
        """0 (head) or 1 (second node) for a process started by that node's `ray start`, else None.

        Ray workers are children of their node's raylet (in a session of their own), so walk up
        the parent chain rather than looking at the process group.
        """
        roots = {proc.pid: i for i, proc in enumerate(self.procs)}
        while pid in table and pid not in roots:
            pid = table[pid][0]
        return roots.get(pid)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            end_process_tree(proc)
        for log in self.logs:
            log.close()
        for d in self.temp:
            shutil.rmtree(d, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes(tmp_path):
    cluster = TwoNodeCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_extract_on_a_two_node_cluster_uses_both_nodes(videos, tmp_path, two_nodes):
    out = tmp_path / "extracted"
    ran_on: dict[int, set[int]] = {0: set(), 1: set()}  # node -> pids seen running a shard task
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            table = proc_table()
            for pid, (_, _, cmdline) in table.items():
                if cmdline.startswith(TASK_TITLE):
                    node = two_nodes.node_of(pid, table)
                    if node is not None:
                        ran_on[node].add(pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        done = run_logged(extract_cmd(videos, out, "--address", two_nodes.address), tmp_path / "extract.log",
                          two_nodes.env, timeout=240)
    finally:
        stop.set()
        watcher.join(5)
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"extracted {N_CLIPS}/{N_CLIPS + 1} videos (1 errors" in done.stdout, done.stdout[-3000:]
    assert ran_on[0] and ran_on[1], f"shard tasks ran on nodes {ran_on}; expected both"
    check_every_clip_once(videos, out)


# --- training ---------------------------------------------------------------------------------

# Loaded into the trainer through PYTHONPATH (test-only; nothing in avtok knows about it): the file
# object for checkpoint step $AVTOK_TEST_STALL_STEP's temporary file gets two writes out to disk, then
# writes its pid to a marker file and hangs, so the test can SIGKILL the trainer with a half-written
# checkpoint on disk. Once the marker exists it stalls no more (a restarted trainer runs normally).
STALL_SITECUSTOMIZE = r'''
import builtins
import os
import re
import time

_pattern = re.compile(r"^\.ckpt-%s\.pt\..*\.tmp$" % os.environ["AVTOK_TEST_STALL_STEP"])
_marker = os.environ["AVTOK_TEST_STALL_MARKER"]
_open = builtins.open


class _Stalling:
    def __init__(self, f):
        self._f, self._writes = f, 0

    def write(self, data):
        n = self._f.write(data)
        self._writes += 1
        if self._writes == 2 and not os.path.exists(_marker):
            self._f.flush()
            os.fsync(self._f.fileno())
            with _open(_marker + ".tmp", "w") as m:
                m.write(str(os.getpid()))
            os.replace(_marker + ".tmp", _marker)
            time.sleep(600)
        return n

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _stalling_open(file, mode="r", *args, **kwargs):
    f = _open(file, mode, *args, **kwargs)
    if "w" in mode and isinstance(file, (str, os.PathLike)) and _pattern.match(os.path.basename(os.fspath(file))):
        return _Stalling(f)
    return f


builtins.open = _stalling_open
'''

TRAIN_STEPS = 5


def train_argv(tokens: Path, run: Path, *, resume: bool = False, steps: int = TRAIN_STEPS) -> list[str]:
    return [exe("avtok"), "train", "--shards", str(tokens), "--out", str(run), "--preset", "tiny",
            "--batch-size", "8", "--steps", str(steps), "--ckpt-every", "1", "--log-every", "1",
            "--device", "cpu", *(["--resume"] if resume else [])]


def stall_env(tmp_path: Path, step: int) -> tuple[dict[str, str], Path]:
    """Environment that makes the trainer hang half-way through writing checkpoint `step`; the marker."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(STALL_SITECUSTOMIZE)
    marker = tmp_path / "stalled"
    env = clean_env(PYTHONPATH=os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
                    AVTOK_TEST_STALL_STEP=str(step), AVTOK_TEST_STALL_MARKER=str(marker))
    return env, marker


def wait_for_stall(proc: subprocess.Popen, marker: Path, log: Path) -> int:
    """Pid of the trainer process that hangs mid-checkpoint."""
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert proc.poll() is None, f"trainer exited before the checkpoint:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "trainer never reached the checkpoint"
        time.sleep(0.05)
    return int(marker.read_text())


def check_half_written(run: Path, step: int) -> None:
    """The killed save left a partial temp file only; last.pt still names the previous, complete one."""
    from avtok.model.checkpoint import CheckpointError, load_checkpoint

    (partial,) = run.glob(f".ckpt-{step}.pt.*.tmp")
    assert 0 < partial.stat().st_size < (run / f"ckpt-{step - 1}.pt").stat().st_size
    with pytest.raises(CheckpointError):
        load_checkpoint(partial)
    assert not (run / f"ckpt-{step}.pt").exists()
    assert (run / "last.pt").resolve() == (run / f"ckpt-{step - 1}.pt").resolve()
    assert load_checkpoint(run / "last.pt")["step"] == step - 1
    assert sorted(p.name for p in run.glob("ckpt-*.pt")) == [f"ckpt-{k}.pt" for k in range(1, step)]


@pytest.mark.slow
def test_train_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(tmp_path):
    import torch
    from avtok.model.checkpoint import load_checkpoint

    tokens, run = tmp_path / "tokens", tmp_path / "run"
    make_token_folder(tokens, test_split=False)
    env, marker = stall_env(tmp_path, 3)
    log = tmp_path / "killed.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(train_argv(tokens, run), stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            assert wait_for_stall(proc, marker, log) == proc.pid
            os.kill(proc.pid, signal.SIGKILL)  # part of ckpt-3 is on disk, the rest never will be
            proc.wait(30)
        finally:
            end_process_tree(proc, grace_s=5)
    assert proc.returncode == -signal.SIGKILL

    check_half_written(run, 3)

    resumed = run_logged(train_argv(tokens, run, resume=True), tmp_path / "resumed.log", clean_env(), timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert f"resumed from {run / 'last.pt'} at step 2" in resumed.stdout
    final = load_checkpoint(run / "last.pt")
    assert final["step"] == TRAIN_STEPS

    # Continuing from the last complete checkpoint gives exactly the weights of an uninterrupted run.
    straight = tmp_path / "straight"
    ref = run_logged(train_argv(tokens, straight), tmp_path / "straight.log", clean_env(), timeout=240)
    assert ref.returncode == 0, ref.stdout[-3000:]
    expected = load_checkpoint(straight / "last.pt")
    assert expected["step"] == TRAIN_STEPS
    for name, tensor in expected["model"].items():
        assert torch.equal(final["model"][name], tensor), name


@pytest.mark.slow
def test_torchrun_job_killed_mid_checkpoint_continues_when_started_again(tmp_path):
    from avtok.model.checkpoint import load_checkpoint

    tokens, run = tmp_path / "tokens", tmp_path / "run"
    make_token_folder(tokens, test_split=False)
    env, marker = stall_env(tmp_path, 3)  # rank 0 (the one that saves) hangs inside ckpt-3
    # The README's recipe: one command for the first start and every restart, with --resume.
    cmd = [exe("torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python",
           *train_argv(tokens, run, resume=True)]
    log = tmp_path / "killed.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rank0 = wait_for_stall(proc, marker, log)
            assert rank0 in descendants(proc.pid)
            os.kill(rank0, signal.SIGKILL)
            proc.wait(120)  # torchrun stops the other rank (blocked in a collective) and fails
        finally:
            end_process_tree(proc, grace_s=10)
    assert proc.returncode != 0
    assert f"--resume: no {run / 'last.pt'} yet" in log.read_text()
    check_half_written(run, 3)

    again = run_logged(cmd, tmp_path / "again.log", clean_env(), timeout=240)
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.stdout.count(f"resumed from {run / 'last.pt'} at step 2") == 1  # printed by rank 0 only
    assert load_checkpoint(run / "last.pt")["step"] == TRAIN_STEPS
    assert sorted(p.name for p in run.glob("ckpt-*.pt")) == [f"ckpt-{k}.pt" for k in range(1, TRAIN_STEPS + 1)]


def test_train_refuses_a_token_shard_changed_on_disk(tmp_path):
    index = make_token_folder(tmp_path / "tokens")
    victim = tmp_path / "tokens" / shards.shard_name(0)
    flip_byte(victim, victim.stat().st_size // 2)
    actual = hashlib.sha256(victim.read_bytes()).hexdigest()
    done = run_logged(train_argv(tmp_path / "tokens", tmp_path / "run"), tmp_path / "train.log", clean_env(),
                      timeout=120)
    assert done.returncode != 0
    assert str(victim) in done.stdout
    assert actual in done.stdout and index["shards"][0]["sha256"] in done.stdout
    assert not (tmp_path / "run" / "last.pt").exists()
