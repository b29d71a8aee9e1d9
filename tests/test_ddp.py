"""Two-process gloo DDP on CPU equals one process with the same global batch; equal per-rank counts."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket

import pytest
import torch
from avtok.model.checkpoint import load_checkpoint
from avtok.model.data import SampleStream, chunk_start
from avtok.model.train import TrainConfig, train
from synth_tokens import write_synthetic


def cfg(tmp, out, **kw) -> TrainConfig:
    base = dict(shards=str(tmp / "tok"), out=str(tmp / out), preset="tiny", batch_size=4, steps=4, lr=2e-3,
                warmup_steps=1, eval_every=1000, ckpt_every=1000, log_every=1, seed=3, device="cpu",
                model_overrides={"dropout": 0.1})
    base.update(kw)
    return TrainConfig(**base)


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    s = train(cfg(__import__("pathlib").Path(tmp), "ddp"), log=lambda _m: None)
    with open(os.path.join(tmp, f"rank{rank}.json"), "w") as f:
        json.dump({k: getattr(s, k) for k in ("losses", "rank", "world", "rank_samples")}, f)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stream_gives_equal_disjoint_chunks_per_rank():
    n = 7  # not a multiple of the batch, shards of 5 and 2 rows
    stream = SampleStream(n, seed=1)
    seen = []
    for step in range(7):  # 28 positions = 4 epochs
        for rank in range(2):
            clips, frames = stream.take(chunk_start(step, 4, 2, rank, 1, 0), 2)
            assert clips.shape == frames.shape == (2,)
            assert frames.min() >= 0 and frames.max() < 10
            seen += clips.tolist()
    for e in range(4):  # every epoch visits every clip exactly once
        assert sorted(seen[e * n:(e + 1) * n]) == list(range(n))
    a, _ = SampleStream(n, seed=1).take(5, 9)
    assert torch.equal(a, torch.tensor(seen[5:14]))  # a pure function of (seed, position)


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(tmp_path):
    write_synthetic(tmp_path / "tok", shard_rows=(5, 2), test_rows=2, classes=2, codebook=8)
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rank_samples"] for r in ranks] == [8, 8]  # 4 steps × 2 per rank, 7 clips in uneven shards
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the logged loss is the all-reduced mean
    torch.set_num_threads(1)
    one = train(cfg(tmp_path, "one", micro_batch=2), log=lambda _m: None)  # same global batch, accumulated
    assert one.losses == pytest.approx(ranks[0]["losses"], rel=1e-5)
    a = load_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
