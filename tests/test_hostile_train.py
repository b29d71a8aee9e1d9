"""Hostile-but-realistic use of `avtok train` and `avtok eval`: runs are never destroyed, bad options and
bad folders end in one `Error:` line (no traceback), and nothing outside a folder is written."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
import torch
from avtok.cli.main import cli
from avtok.model import checkpoint as C
from avtok.model.checkpoint import load_checkpoint, prune_checkpoints, save_checkpoint
from avtok.model.config import preset
from avtok.model.evaluate import check_wav_dir, wav_names, write_wavs
from avtok.model.files import folder_lock
from avtok.model.run_log import read_metrics
from avtok.model.transformer import AVTransformer
from click.testing import CliRunner
from synth_tokens import write_synthetic

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tokens(tmp_path) -> Path:
    write_synthetic(tmp_path / "tok", shard_rows=(6,), test_rows=2, classes=2, codebook=8)
    return tmp_path / "tok"


def run_cli(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def train_args(tokens: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "--shards", tokens, "--out", out, "--preset", "tiny", "--steps", str(steps), "--batch-size", "2",
            "--ckpt-every", "2", "--log-every", "1", "--eval-every", "1000", "--device", "cpu", "--log", "none", *extra]


def snapshot(folder: Path) -> dict[str, str]:
    """name -> sha256 (or link target) of every entry, to compare a folder before and after."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = "-> " + os.readlink(p)
        elif p.is_file() and p.name != ".avtok.lock":
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_one_error(res, *needles: str, code: int | None = None) -> None:
    assert res.exit_code != 0, res.output
    if code is not None:
        assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, res.output
    for needle in needles:
        assert needle in res.output, (needle, res.output)


def test_train_into_a_run_refuses_without_resume_and_changes_nothing(tokens, tmp_path):
    run = tmp_path / "run"
    assert run_cli(*train_args(tokens, run, 4)).exit_code == 0
    before = snapshot(run)
    res = run_cli(*train_args(tokens, run, 4))
    assert_one_error(res, "--resume", "--overwrite", str(run), code=1)
    assert snapshot(run) == before
    # --overwrite starts over: the old checkpoints and metrics are gone, a new run stands there
    res = run_cli(*train_args(tokens, run, 2, "--overwrite"))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in run.glob("ckpt-*.pt")) == ["ckpt-2.pt"]
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2]


def test_resume_with_last_pt_target_deleted_continues_from_newest_complete(tokens, tmp_path):
    run = tmp_path / "run"
    assert run_cli(*train_args(tokens, run, 4)).exit_code == 0
    (run / "ckpt-4.pt").unlink()  # last.pt now dangles
    ck2 = (run / "ckpt-2.pt").read_bytes()
    metrics_before = (run / "metrics.jsonl").read_bytes()
    res = run_cli(*train_args(tokens, run, 6, "--resume"))
    assert res.exit_code == 0, res.output
    assert f"resumed from {run / 'ckpt-2.pt'} at step 2" in res.output
    assert "starting from scratch" not in res.output
    assert (run / "ckpt-2.pt").read_bytes() == ck2  # the good older checkpoint is untouched
    assert load_checkpoint(run / "last.pt")["step"] == 6
    # metrics.jsonl was appended to, never truncated; the reader drops the abandoned steps 3-4 once
    assert (run / "metrics.jsonl").read_bytes().startswith(metrics_before)
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_resume_with_damaged_last_pt_uses_previous_and_all_damaged_refuses(tokens, tmp_path):
    run = tmp_path / "run"
    assert run_cli(*train_args(tokens, run, 4)).exit_code == 0
    target = run / "ckpt-4.pt"
    target.write_bytes(target.read_bytes()[:1000])  # truncated: last.pt names a damaged file
    res = run_cli(*train_args(tokens, run, 4, "--resume"))
    assert res.exit_code == 0, res.output
    assert f"resumed from {run / 'ckpt-2.pt'} at step 2" in res.output and "skipping" in res.output
    assert load_checkpoint(run / "last.pt")["step"] == 4
    # every checkpoint damaged: refuse, and change nothing
    for p in run.glob("ckpt-*.pt"):
        p.write_bytes(b"junk")
    before = snapshot(run)
    res = run_cli(*train_args(tokens, run, 4, "--resume"))
    assert_one_error(res, "no checkpoint can be resumed", "ckpt-2.pt", code=1)
    assert snapshot(run) == before


def test_keep_last_prunes_but_never_the_checkpoint_last_pt_names(tokens, tmp_path):
    run = tmp_path / "run"
    res = run_cli(*train_args(tokens, run, 6, "--keep-last", "1"))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in run.glob("ckpt-*.pt")) == ["ckpt-6.pt"]
    # last.pt pointing at an older file (a resume from it): pruning keeps that one and the newest
    folder = tmp_path / "prune"
    cfg = preset("tiny", image_codebook=8, audio_codebook=8)
    state = {"model": AVTransformer(cfg).state_dict(), "config": cfg.to_dict(), "tokenizers": {}}
    for step in range(1, 6):
        save_checkpoint({**state, "step": step}, folder, step)
    (folder / "last.pt").unlink()
    os.symlink("ckpt-2.pt", folder / "last.pt")
    removed = prune_checkpoints(folder, 1)
    assert sorted(p.name for p in removed) == ["ckpt-1.pt", "ckpt-3.pt", "ckpt-4.pt"]
    assert sorted(p.name for p in folder.glob("ckpt-*.pt")) == ["ckpt-2.pt", "ckpt-5.pt"]


def test_second_train_on_a_locked_folder_names_the_holder(tokens, tmp_path):
    run = tmp_path / "run"
    with folder_lock(run, "test holder"):
        res = run_cli(*train_args(tokens, run, 2))
    assert_one_error(res, str(os.getpid()), "test holder", code=1)
    assert not list(run.glob("ckpt-*.pt"))


def test_disk_full_while_checkpointing_keeps_previous_last_pt(tokens, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert run_cli(*train_args(tokens, run, 2)).exit_code == 0
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save({"partial": torch.zeros(1000)}, f)  # some bytes reach the temporary file first
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(C.torch, "save", full_disk)
    res = run_cli(*train_args(tokens, run, 4, "--resume"))
    monkeypatch.undo()
    assert_one_error(res, "ckpt-4.pt", os.strerror(errno.ENOSPC), code=1)
    assert load_checkpoint(run / "last.pt")["step"] == 2
    assert sorted(p.name for p in run.iterdir() if p.name != ".avtok.lock") == \
        ["ckpt-2.pt", "config.json", "last.pt", "metrics.jsonl"]  # no temporary file left behind


@pytest.mark.parametrize("args,needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--ckpt-every", "0"], "--ckpt-every"),
    (["--set", "dec_depth=abc"], "dec_depth"),
    (["--set", "dec_depth=-1"], "dec_depth"),
    (["--set", "dropout=nan"], "dropout"),
    (["--set", "no_such_key=1"], "no_such_key"),
    (["--device", "banana"], "banana"),
    (["--epochs", "nan"], "--epochs"),
    (["--lr", "-1"], "--lr"),
    (["--keep-last", "-2"], "--keep-last"),
    (["--resume", "--overwrite"], "--overwrite"),
])
def test_bad_train_options_are_usage_errors(tokens, tmp_path, args, needle):
    run = tmp_path / "run"
    res = run_cli(*train_args(tokens, run, 2), *args)
    assert_one_error(res, needle, code=2)
    assert not run.exists()


def _checkpoint_for(tmp_path: Path, fingerprint: str) -> Path:
    cfg = preset("tiny", image_codebook=8, audio_codebook=8)
    rec = {"kind": "patch-kmeans", "fingerprint": fingerprint, "path": "/nonexistent", "codebook_size": 8}
    return save_checkpoint({"model": AVTransformer(cfg).state_dict(), "ema": None, "config": cfg.to_dict(),
                            "step": 1, "tokenizers": {"image": rec, "audio": rec}}, tmp_path / "ck", 1)


def test_eval_refuses_shards_of_another_tokenizer(tokens, tmp_path):
    ckpt = _checkpoint_for(tmp_path, "0" * 64)  # the synthetic shards' fingerprint is "f" * 64
    out = tmp_path / "ev" / "eval.json"
    res = run_cli("eval", "--checkpoint", ckpt, "--shards", tokens, "--out", out, "--no-waveforms")
    assert_one_error(res, "fingerprint", str(tokens), code=1)
    assert not out.exists()
    res = run_cli("eval", "--checkpoint", ckpt, "--shards", tokens, "--out", out, "--device", "banana")
    assert_one_error(res, "banana", code=2)


def test_wav_dir_names_stay_inside_the_folder(tmp_path):
    ids = ["../../x", "/abs/evil", "nested/dir/clip", "ünï cödé ☃", "..", "a" * 300]
    names = wav_names(ids)
    assert len(set(names)) == len(ids)
    waves = [torch.zeros(100).numpy() + i / 10 for i in range(len(ids))]
    folder = tmp_path / "sub" / "wavs"
    write_wavs(folder, ids, waves)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(Path("sub/wavs") / n for n in [*names, "index.csv"])
    import csv

    with open(folder / "index.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["video_id"] for r in rows] == ids and [r["file"] for r in rows] == names
    # a second run into the same folder refuses instead of replacing the files
    with pytest.raises(ValueError, match="exists"):
        check_wav_dir(folder, ids)
