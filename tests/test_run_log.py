"""`avtok train --log tensorboard|wandb --sample-every N`: dashboard scalars, config, audio and image previews."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from avtok.cli.main import cli
from avtok.model.geometry import MEL_PARAMS, MEL_SHAPE
from avtok.model.run_log import read_metrics
from avtok.model.token_shards import make_meta, write_token_index, write_token_shard
from avtok.model.tokenizers import frames_to_input, load_tokenizer, mel_to_input
from avtok.model.tokenizers.patch_kmeans import fit_patch_kmeans
from click.testing import CliRunner
from PIL import Image

K = 16
TEST_IDS = ["../../evil", "nested/dir/clip", "plain"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def kmeans_tokens(tmp_path_factory) -> Path:
    """Token shards made by a real (tiny) patch-kmeans tokenizer, so previews can be decoded."""
    root = tmp_path_factory.mktemp("tok")
    rng = np.random.default_rng(0)
    n_train = 8
    n = n_train + len(TEST_IDS)
    frames = rng.integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)
    mels = rng.random((n, *MEL_SHAPE), dtype=np.float32)
    km = fit_patch_kmeans(frames, mels, root / "km.safetensors", k=K, iters=2)
    tok_i, tok_a = (load_tokenizer(km, "patch-kmeans", modality=m) for m in ("image", "audio"))
    img = tok_i.encode(frames_to_input(frames)).numpy().astype(np.uint16)
    aud = tok_a.encode(mel_to_input(mels)).numpy().astype(np.uint16)
    meta = make_meta(tok_i.record(), tok_a.record(), MEL_PARAMS, K, K)
    folder = root / "tokens"
    folder.mkdir()
    ids = [f"t{i}" for i in range(n_train)] + TEST_IDS
    entry = write_token_shard(folder / "tokens-000000.parquet", meta, ids, ["x"] * n,
                              ["train"] * n_train + ["test"] * len(TEST_IDS), np.repeat(img[:, None], 10, 1), aud)
    write_token_index(folder, meta, [entry])
    return folder


def train_args(tokens: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--shards", str(tokens), "--out", str(out), "--preset", "tiny", "--steps", "2",
            "--batch-size", "4", "--log-every", "1", "--eval-every", "1", "--ckpt-every", "1", "--device", "cpu",
            "--sample-every", "2", "--preview-clips", "2", "--peak-tflops", "1", *extra]


def test_tensorboard_scalars_config_and_previews(kmeans_tokens, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    res = CliRunner().invoke(cli, train_args(kmeans_tokens, out, "--log", "tensorboard"))
    assert res.exit_code == 0, res.output
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "audio": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    want = {f"train/{k}" for k in ("loss", "lr", "grad_norm", "samples_per_s", "mfu", "bad_steps", "epoch",
                                   "nll_image", "acc_image", "nll_audio", "acc_audio")}
    want |= {f"eval/{k}" for k in ("i2a_nll", "i2a_acc", "a2i_nll", "a2i_acc", "uncond_audio_nll",
                                   "uncond_image_nll")}
    assert want <= set(tags["scalars"]), sorted(set(want) - set(tags["scalars"]))
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    rows = [r for r in read_metrics(out) if "loss" in r]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert [e.step for e in acc.Scalars("eval/i2a_nll")] == [1, 2]
    # the previews: one audio and two images per clip and step; names never carry a path from the id
    names = ["00000_evil", "00001_nested_dir_clip"]
    assert set(tags["audio"]) == {f"i2a/{n}/audio" for n in names}
    assert set(tags["images"]) == {f"i2a/{n}/mel" for n in names} | {f"a2i/{n}/image" for n in names}
    assert [e.step for e in acc.Audio("i2a/00000_evil/audio")] == [2]
    assert acc.Audio("i2a/00000_evil/audio")[0].sample_rate == MEL_PARAMS["sample_rate"]
    img = acc.Images("a2i/00000_evil/image")[0]
    assert (img.width, img.height) == (256, 256)
    config = json.loads(acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode().strip("`\n"))
    assert config["train"]["batch_size"] == 4 and config["model"]["image_codebook"] == K
    # the same previews as files, nowhere else
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000002"]
    for step in (2,):
        folder = out / "samples" / f"step-{step:06d}"
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f"{n}_{s}" for n in names for s in ("i2a.wav", "i2a_mel.png", "a2i.png"))
        wave, sr = sf.read(folder / f"{names[1]}_i2a.wav")
        assert sr == MEL_PARAMS["sample_rate"] and wave.shape == (MEL_SHAPE[1] * MEL_PARAMS["hop_length"],)
        assert np.abs(wave).max() > 0
        assert Image.open(folder / f"{names[0]}_i2a_mel.png").size == (MEL_SHAPE[1], MEL_SHAPE[0])
        assert Image.open(folder / f"{names[0]}_a2i.png").size == (256, 256)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing written outside --out


def test_log_none_writes_no_dashboard_and_sample_every_zero_no_previews(kmeans_tokens, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, train_args(kmeans_tokens, out, "--log", "none", "--sample-every", "0"))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [".avtok.lock", "ckpt-1.pt", "ckpt-2.pt", "config.json",
                                                     "last.pt", "metrics.jsonl"]


def test_wandb_offline_resumes_the_same_run(kmeans_tokens, tmp_path, monkeypatch):
    # wandb is the optional extra avtok[wandb]; the dev extra installs it so this runs in CI
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, [*train_args(kmeans_tokens, out, "--log", "wandb", "--sample-every", "0"),
                                   "--steps", "1"])
    assert res.exit_code == 0, res.output
    run_id = (out / "wandb-run-id").read_text().strip()
    res = CliRunner().invoke(cli, [*train_args(kmeans_tokens, out, "--log", "wandb", "--sample-every", "0"),
                                   "--steps", "2", "--resume"])
    assert res.exit_code == 0, res.output
    assert (out / "wandb-run-id").read_text().strip() == run_id
    runs = sorted(p.name for p in (out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.endswith(run_id) for r in runs)


def test_tensorboard_serves_the_run_in_a_browser(kmeans_tokens, tmp_path):
    """The event files open in TensorBoard itself: its page, in headless Chromium, draws the loss chart.
    The screenshot lands in tests/artifacts/ (and, with AVTOK_UPDATE_DOCS_IMG=1, in docs/img/ for the README)."""
    import os

    from PIL import Image
    from screenshots import tensorboard_screenshot

    out = tmp_path / "run"
    r = CliRunner().invoke(cli, train_args(kmeans_tokens, out, "--log", "tensorboard", "--sample-every", "0"))
    assert r.exit_code == 0, r.output
    root = Path(__file__).resolve().parents[1]
    shot = tensorboard_screenshot(out / "tensorboard", root / "tests" / "artifacts" / "tensorboard.png")
    with Image.open(shot) as im:
        assert im.width == 900 and im.height > 300
        assert len(im.convert("RGB").getcolors(1 << 16) or []) > 8  # a drawn page, not a blank one
    if os.environ.get("AVTOK_UPDATE_DOCS_IMG"):
        (root / "docs" / "img" / "tensorboard.png").write_bytes(shot.read_bytes())
