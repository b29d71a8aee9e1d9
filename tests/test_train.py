"""Training: learnability on synthetic tokens, exact resume, bad token folders, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from avtok.cli.main import cli
from avtok.model.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from avtok.model.run_log import read_metrics
from avtok.model.token_shards import write_token_index, write_token_shard
from avtok.model.train import TrainConfig, TrainingError, train
from click.testing import CliRunner
from synth_tokens import synth_meta, write_synthetic


def quiet(_msg: str) -> None:
    pass


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_tiny_learns_image_to_audio(tmp_path):
    # 4 classes own disjoint image-token ranges; audio = the class's template: any frame determines it.
    # The demo's model and masking (DemoOptions.model_overrides: encoder on the visible tokens only, half of
    # the samples with one modality fully masked, so a whole frame with no audio is seen in training).
    # Over seeds 1-5 (200 steps, one thread, about 26 s each): i2a accuracy 0.831-0.995 and i2a NLL
    # 0.17-0.31 of the unconditional audio NLL with the demo's sine-cosine position start (0.938-0.996 and
    # 0.13-0.18 from N(0, 0.02): this task's templates differ position by position, docs/testing.md); the
    # tiny preset's paper masking needed 100 steps of a 4x wider model (72-80 s) for the same.
    from avtok.pipeline.demo import DemoOptions

    write_synthetic(tmp_path / "tok", shard_rows=(100, 60), test_rows=32, classes=4, codebook=16)
    s = train(TrainConfig(shards=str(tmp_path / "tok"), out=str(tmp_path / "run"), preset="tiny",
                          model_overrides=DemoOptions().model_overrides, batch_size=16, steps=200, lr=3e-3,
                          min_lr=3e-4, warmup_steps=5, eval_every=200, eval_samples=32, ckpt_every=200,
                          log_every=100, seed=1), log=quiet)
    ev = s.eval
    assert ev.i2a_acc >= 0.8, ev
    assert ev.i2a_nll < 0.35 * ev.uncond_audio_nll, ev
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows if "loss" in r] == [100, 200]
    assert rows[-1]["eval"]["i2a_acc"] == ev.i2a_acc
    # the checkpoint carries the tokenizer records and rebuilds the model
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["tokenizers"]["audio"]["fingerprint"] == "f" * 64
    assert ck["tokenizers"]["image"]["codebook_size"] == 16
    assert model_from_checkpoint(ck).cfg.audio_codebook == 16


def small_cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(shards=str(tmp_path / "tok"), out=str(tmp_path / "run"), preset="tiny", batch_size=4, steps=10,
                lr=2e-3, warmup_steps=3, eval_every=1000, eval_samples=8, ckpt_every=1000, log_every=1, seed=7,
                model_overrides={"dropout": 0.1}, ema=True, ema_decay=0.99)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_is_exact(tmp_path):
    write_synthetic(tmp_path / "tok", shard_rows=(7, 6), test_rows=3, classes=2, codebook=8)
    straight = train(small_cfg(tmp_path, out=str(tmp_path / "a")), log=quiet)
    first = train(small_cfg(tmp_path, out=str(tmp_path / "b"), stop_at=5), log=quiet)
    assert first.steps_run == 5 and (tmp_path / "b" / "ckpt-5.pt").exists()
    second = train(small_cfg(tmp_path, out=str(tmp_path / "b"), resume=True), log=quiet)
    assert second.steps_run == 5 and second.step == 10
    assert first.losses + second.losses == straight.losses  # bit for bit
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 10 and b["data"]["position"] == 40
    for part in ("model", "ema"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), (part, k)
    exp_a = a["optimizer"]["state"][0]["exp_avg"]
    assert torch.equal(exp_a, b["optimizer"]["state"][0]["exp_avg"])
    # metrics.jsonl holds each step once
    rows = read_metrics(tmp_path / "b")
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 11))
    assert [r["step"] for r in rows if "eval" in r] == [5, 10]
    # resuming with a different batch is refused
    with pytest.raises(TrainingError, match="batch_size"):
        train(small_cfg(tmp_path, out=str(tmp_path / "b"), resume=True, batch_size=8, steps=20), log=quiet)


def test_non_finite_losses_are_skipped_then_stop(tmp_path, monkeypatch):
    write_synthetic(tmp_path / "tok", shard_rows=(8,), test_rows=2, classes=2, codebook=8)
    from avtok.model import transformer

    real = transformer.AVTransformer.forward

    def nan_forward(self, *a, **k):
        loss, stats = real(self, *a, **k)
        return loss * float("nan"), stats

    monkeypatch.setattr(transformer.AVTransformer, "forward", nan_forward)
    with pytest.raises(TrainingError, match="3 non-finite losses in a row"):
        train(small_cfg(tmp_path, max_bad_steps=3, ema=False), log=quiet)


def write_bad_folder(tmp_path, kind: str):
    folder = tmp_path / kind
    if kind == "missing-index":
        write_synthetic(folder, shard_rows=(4,), test_rows=1)
        (folder / "index.json").unlink()
    elif kind == "mixed":
        write_synthetic(folder, shard_rows=(4,), test_rows=1)
        other = synth_meta(32, fingerprint="0" * 64)
        import numpy as np

        entry = write_token_shard(folder / "tokens-000001.parquet", other, ["x"], [""], ["train"],
                                  np.zeros((1, 10, 256), np.uint16), np.zeros((1, 265), np.uint16))
        index = json.loads((folder / "index.json").read_text())
        meta = {k: v for k, v in index.items() if k not in ("shards", "rows")}
        write_token_index(folder, meta, index["shards"] + [entry])
    elif kind == "grid":
        write_synthetic(folder, shard_rows=(4,), test_rows=1)
        index = json.loads((folder / "index.json").read_text())
        index["image_grid"] = [8, 8]
        (folder / "index.json").write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize("kind,needle", [("missing-index", "index.json: missing"),
                                         ("mixed", "tokens-000001.parquet: image_tokenizer"),
                                         ("grid", "image_grid is [8, 8]")])
def test_bad_shards_folder_stops_with_clear_message(tmp_path, kind, needle):
    folder = write_bad_folder(tmp_path, kind)
    res = CliRunner().invoke(cli, ["train", "--shards", str(folder), "--out", str(tmp_path / "run"),
                                   "--preset", "tiny", "--steps", "1", "--batch-size", "2"])
    assert res.exit_code != 0
    assert needle in res.output, res.output
    assert str(folder) in res.output
    assert "Traceback" not in res.output


def test_cli_dry_run_prints_table_with_total_last():
    res = CliRunner().invoke(cli, ["train", "--preset", "large", "--dry-run"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[-1] == "total 409,409,536 (409.4M)"
    assert "  dec_depth: 8" in lines and "  drop_rule: extend" in lines
    res = CliRunner().invoke(cli, ["train", "--preset", "tiny", "--dry-run", "--set", "dec_depth=3"])
    assert "  dec_depth: 3" in res.output.splitlines()


def test_cli_trains_and_checkpoint_loads(tmp_path):
    write_synthetic(tmp_path / "tok", shard_rows=(6,), test_rows=2, classes=2, codebook=8)
    res = CliRunner().invoke(cli, ["train", "--shards", str(tmp_path / "tok"), "--out", str(tmp_path / "run"),
                                   "--preset", "tiny", "--steps", "3", "--batch-size", "2", "--eval-every", "3",
                                   "--log-every", "1", "--ema"])
    assert res.exit_code == 0, res.output
    assert "step 3/3 | loss" in res.output and "samples/s" in res.output and "MFU" in res.output
    assert res.output.strip().splitlines()[-1].startswith("trained 3 steps")
    assert (tmp_path / "run" / "last.pt").is_symlink()
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["ema"] is not None and ck["step"] == 3
    assert ck["config"]["image_codebook"] == 8
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not an avtok checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_one_precision_resolver_for_train_and_generate(monkeypatch):
    """auto: fp32 on CPU, fp16 on V100 (sm70, GradScaler in training), bf16 on A100/H100/H200 (sm80+)."""
    from avtok.model import precision as P
    from avtok.model.generate import GenerateError, autocast_for

    assert P.resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert isinstance(autocast_for("auto", torch.device("cpu")), type(P.autocast(torch.float32, torch.device("cpu"))))
    cuda = torch.device("cuda:0")
    for cap, want in (((7, 0), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)):
        monkeypatch.setattr(P.torch.cuda, "get_device_capability", lambda _d, c=cap: c)
        assert P.resolve_precision("auto", cuda) == want
        assert autocast_for("auto", cuda).fast_dtype == want  # generate agrees with training
    assert P.resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(P.DeviceError, match="fp8"):
        P.resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(GenerateError, match="fp8"):
        autocast_for("fp8", torch.device("cpu"))
    with pytest.raises(P.DeviceError, match="banana"):
        P.resolve_device("banana")


def test_cpu_optimizer_is_multi_tensor_and_equals_the_per_tensor_loop():
    """avtok train's CPU AdamW takes the foreach update (faster: bench/optimizer_step.py) and moves every
    weight to the same bits as torch's per-tensor loop."""
    from avtok.model.config import preset
    from avtok.model.train import make_optimizer
    from avtok.model.transformer import AVTransformer

    def trained(loop: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        torch.manual_seed(0)
        model = AVTransformer(preset("tiny", dim=32, dec_dim=16, depth=1, dec_depth=1, heads=1, dec_heads=1))
        start = [p.detach().clone() for p in model.parameters()]
        opt = make_optimizer(model, 2e-3, TrainConfig(shards="", out=""), torch.device("cpu"))
        assert opt.defaults["foreach"] is True and not opt.defaults["fused"]
        assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
        if loop:
            opt = torch.optim.AdamW(opt.param_groups, lr=2e-3, betas=(0.9, 0.95), foreach=False)
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        return start, [p.detach().clone() for p in model.parameters()]

    start, fast = trained(loop=False)
    _, loop = trained(loop=True)
    assert all(torch.equal(a, b) for a, b in zip(fast, loop, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(start, fast, strict=True))  # every tensor was updated
