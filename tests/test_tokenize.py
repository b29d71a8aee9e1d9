"""`avtok tokenize`: extracted shards → Parquet token shards; read back, re-run, resume, refusals, size."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from avtok.cli.main import cli
from avtok.model.files import write_json
from avtok.model.geometry import MEL_PARAMS
from avtok.model.token_shards import load_token_index, make_meta, write_token_shard
from avtok.model.tokenizers import frames_to_input, load_tokenizer, mel_to_input
from avtok.model.tokenizers.patch_kmeans import fit_patch_kmeans
from avtok.pipeline import tokenize as tok_mod
from avtok.pipeline.extracted import ExtractedSample, read_extracted_shard, write_extracted_shard
from avtok.pipeline.tokenize import TokenizeError, run_tokenize
from click.testing import CliRunner
from test_kmeans import make_frames, make_mels

torch.set_num_threads(2)
SHARD_SIZES = (5, 3)


def _write_extracted(folder, sizes=SHARD_SIZES, mel_params=MEL_PARAMS, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    n = 0
    for s, size in enumerate(sizes):
        frames, mels = make_frames(size * 10, rng), make_mels(size, rng)
        samples = [ExtractedSample(key=f"vid_{n + i}", frames=frames[i * 10:(i + 1) * 10], mel=mels[i],
                                   meta={"video_id": f"vid.{n + i}", "label": f"class {(n + i) % 3}",
                                         "split": "test" if (n + i) % 4 == 0 else "train", "warnings": []})
                   for i in range(size)]
        name = f"shard-{s:06d}.tar"
        write_extracted_shard(folder / name, samples)
        shards.append({"name": name, "samples": size})
        n += size
    write_json(folder / "index.json", {"kind": "avtok-extracted", "mel_params": mel_params, "shards": shards})
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    extracted = _write_extracted(root / "extracted")
    rng = np.random.default_rng(9)
    km = fit_patch_kmeans(make_frames(8, rng), make_mels(8, rng), root / "km.safetensors", k=64, iters=3,
                          max_points=2048)
    return extracted, km


def _run(extracted, km, out, **kw):
    return run_tokenize(extracted, out, km, km, in_process=True, **kw)


def _file_state(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.glob("tokens-*"))}


def test_token_shards_read_back_with_plain_pyarrow(setup, tmp_path):
    extracted, km = setup
    summary = _run(extracted, km, tmp_path / "tokens")
    assert (summary.clips, summary.errors, summary.shards, summary.shards_run) == (8, 0, 2, 2)
    assert "tokenized 8 clips (0 errors) into 2 shards" in summary.line()
    img = load_tokenizer(km, "patch-kmeans", modality="image")
    aud = load_tokenizer(km, "patch-kmeans", modality="audio")
    for n, size in enumerate(SHARD_SIZES):
        table = pq.read_table(tmp_path / "tokens" / f"tokens-{n:06d}.parquet")
        samples = list(read_extracted_shard(extracted / f"shard-{n:06d}.tar"))
        assert table.num_rows == size
        assert table["video_id"].to_pylist() == [s.meta["video_id"] for s in samples]
        assert table["label"].to_pylist() == [s.meta["label"] for s in samples]
        assert table["split"].to_pylist() == [s.meta["split"] for s in samples]
        image = np.array(table["image_tokens"].to_pylist(), dtype=np.int64).reshape(size, 10, 256)
        audio = np.array(table["audio_tokens"].to_pylist(), dtype=np.int64)
        want_img = img.encode(frames_to_input(np.concatenate([s.frames for s in samples]))).view(size, 10, 256)
        want_aud = aud.encode(mel_to_input(np.stack([s.mel for s in samples])))
        assert np.array_equal(image, want_img.numpy()) and np.array_equal(audio, want_aud.numpy())
        meta = json.loads(table.schema.metadata[b"avtok"])
        assert meta["image_tokenizer"] == img.record() and meta["audio_tokenizer"] == aud.record()
        assert meta["mel"] == MEL_PARAMS
    index = load_token_index(tmp_path / "tokens")
    assert index["rows"] == 8 and index["complete"] is True
    assert index["image_tokenizer"]["fingerprint"] == img.fingerprint
    assert [s["file"] for s in index["shards"]] == ["tokens-000000.parquet", "tokens-000001.parquet"]


def test_rerun_is_a_no_op(setup, tmp_path):
    extracted, km = setup
    out = tmp_path / "tokens"
    _run(extracted, km, out)
    before = _file_state(out)
    summary = _run(extracted, km, out)
    assert (summary.shards_run, summary.shards_skipped, summary.clips) == (0, 2, 8)
    assert _file_state(out) == before


def test_killed_run_resumes(setup, tmp_path, monkeypatch):
    extracted, km = setup
    out = tmp_path / "tokens"
    real = tok_mod.tokenize_shard

    def dies_on_second(extracted_path, out_path, *a, **kw):
        if "000001" in str(extracted_path):
            raise RuntimeError("worker killed")
        return real(extracted_path, out_path, *a, **kw)

    monkeypatch.setattr(tok_mod, "tokenize_shard", dies_on_second)
    first = _run(extracted, km, out)
    assert [i for i, _ in first.shards_failed] == [1] and "worker killed" in first.shards_failed[0][1]
    assert not (out / "tokens-000001.parquet").exists()
    assert json.loads((out / "index.json").read_text())["complete"] is False
    (out / ".tokens-000001.parquet.abc.tmp").write_bytes(b"partial")  # what a kill mid-write leaves
    done_before = _file_state(out)
    monkeypatch.setattr(tok_mod, "tokenize_shard", real)
    second = _run(extracted, km, out)
    assert (second.shards_run, second.shards_skipped, second.shards_failed) == (1, 1, [])
    assert not list(out.glob(".*.tmp"))
    assert _file_state(out)["tokens-000000.parquet"] == done_before["tokens-000000.parquet"]
    index = load_token_index(out)
    assert index["rows"] == 8 and index["complete"] is True
    # the resumed folder holds exactly what an uninterrupted run makes
    clean = tmp_path / "clean"
    _run(extracted, km, clean)
    for name in ("tokens-000000.parquet", "tokens-000001.parquet"):
        assert pq.read_table(clean / name).equals(pq.read_table(out / name))


def test_other_mel_parameters_are_refused(setup, tmp_path):
    _, km = setup
    bad = _write_extracted(tmp_path / "ex", sizes=(1,), mel_params={**MEL_PARAMS, "n_mels": 128, "fmax": 8000.0})
    with pytest.raises(TokenizeError, match=r"mel parameters differ .*\(fmax, n_mels\)"):
        _run(bad, km, tmp_path / "tokens")
    (bad / "index.json").unlink()
    with pytest.raises(TokenizeError, match="index.json: missing"):
        _run(bad, km, tmp_path / "tokens")


def test_other_tokenizer_into_same_folder_is_refused(setup, tmp_path):
    extracted, km = setup
    out = tmp_path / "tokens"
    _run(extracted, km, out)
    rng = np.random.default_rng(3)
    other = fit_patch_kmeans(make_frames(2, rng), make_mels(2, rng), tmp_path / "other.safetensors", k=8, iters=1)
    with pytest.raises(TokenizeError, match="already holds tokens made with other tokenizers"):
        _run(extracted, other, out)
    elsewhere = _write_extracted(tmp_path / "ex2", sizes=(1,))
    with pytest.raises(TokenizeError, match="holds tokens of .*, not of"):
        _run(elsewhere, km, out)


def test_bad_sample_is_an_error_row_not_a_failed_shard(setup, tmp_path):
    _, km = setup
    ex = _write_extracted(tmp_path / "ex", sizes=(3,))
    import tarfile
    src, dst = ex / "shard-000000.tar", ex / "tmp.tar"
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:  # drop one clip's mel
        for info in tin:
            if info.name != "vid_1.mel.npy":
                tout.addfile(info, tin.extractfile(info))
    os.replace(dst, src)
    summary = _run(ex, km, tmp_path / "tokens")
    assert (summary.clips, summary.errors, summary.shards_failed) == (2, 1, [])
    table = pq.read_table(tmp_path / "tokens" / "tokens-000000.parquet")
    assert table["video_id"].to_pylist() == ["vid.0", "vid.2"]
    errors = json.loads((tmp_path / "tokens" / "index.json").read_text())["errors"]
    assert errors == [{"video_id": "vid_1", "error": "ValueError: vid_1: mel.npy missing"}]


def test_storage_per_clip_on_realistic_tokens(tmp_path):
    """1000 clips of non-uniform tokens (Zipf-distributed codes, half of each frame's codes kept from the
    previous frame) written as one shard: measured 3.32 KB per clip (2825 tokens)."""
    rng = np.random.default_rng(0)
    k, n = 1024, 1000
    p = 1 / np.arange(1, k + 1)
    p /= p.sum()
    perm = rng.permutation(k)

    def draw(size):
        return perm[rng.choice(k, size=size, p=p)]

    image = np.empty((n, 10, 256), np.uint16)
    image[:, 0] = draw((n, 256))
    for f in range(1, 10):
        image[:, f] = np.where(rng.random((n, 256)) < 0.5, image[:, f - 1], draw((n, 256)))
    audio = draw((n, 265)).astype(np.uint16)
    rec = {"kind": "taming", "fingerprint": "0" * 64}
    meta = make_meta(rec, {**rec, "kind": "specvqgan"}, MEL_PARAMS, k, k)
    path = tmp_path / "tokens-000000.parquet"
    write_token_shard(path, meta, [f"{i:011d}_000030" for i in range(n)], ["playing drums"] * n,
                      ["train"] * n, image, audio)
    per_clip = path.stat().st_size / n
    assert per_clip <= 3500, per_clip


def test_cli_fit_kmeans_then_tokenize(setup, tmp_path):
    extracted, _ = setup
    runner = CliRunner()
    km = tmp_path / "km.safetensors"
    res = runner.invoke(cli, ["tokenizer", "fit-kmeans", "--extracted", str(extracted), "--out", str(km),
                              "--k", "32", "--clips", "4", "--iters", "2"])
    assert res.exit_code == 0, res.output
    assert "fit patch k-means (k=32) on 4 clips" in res.output
    assert load_tokenizer(km, "patch-kmeans", modality="audio").codebook_size == 32
    out = tmp_path / "tokens"
    args = ["tokenize", "--extracted", str(extracted), "--out", str(out), "--image-tokenizer", str(km),
            "--audio-tokenizer", str(km), "--no-ray"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "tokenized 8 clips (0 errors) into 2 shards (2 run, 0 already done)" in res.output
    res = runner.invoke(cli, args)
    assert "(0 run, 2 already done)" in res.output
    bad = _write_extracted(tmp_path / "ex", sizes=(1,), mel_params={**MEL_PARAMS, "hop_length": 160})
    res = runner.invoke(cli, [*args[:2], str(bad), *args[3:]])
    assert res.exit_code != 0 and "mel parameters differ" in res.output


@pytest.mark.slow
def test_ray_actor_run(setup, tmp_path):
    extracted, km = setup
    summary = run_tokenize(extracted, tmp_path / "tokens", km, km, workers=1)
    assert (summary.clips, summary.shards_run, summary.shards_failed) == (8, 2, [])
    assert load_token_index(tmp_path / "tokens")["rows"] == 8


@pytest.mark.slow
def test_published_vqgan_layouts_through_tokenize(tmp_path):
    """One clip through full-size taming + SpecVQGAN checkpoints (random weights), exact mode."""
    from avtok.model.tokenizers.vqgan import SPECVQGAN_VGGSOUND, TAMING_F16_1024
    from test_vqgan import _random_model, _save_lightning_ckpt

    ckpts = {}
    for name, cfg, seed in (("taming", TAMING_F16_1024, 0), ("specvqgan", SPECVQGAN_VGGSOUND, 1)):
        ckpts[name] = tmp_path / f"{name}.ckpt"
        _save_lightning_ckpt(ckpts[name], _random_model(cfg, seed).state_dict(), seed)
    ex = _write_extracted(tmp_path / "ex", sizes=(1,))
    summary = run_tokenize(ex, tmp_path / "tokens", ckpts["taming"], ckpts["specvqgan"], batch_size=10,
                           in_process=True)
    assert (summary.clips, summary.errors) == (1, 0)
    table = pq.read_table(tmp_path / "tokens" / "tokens-000000.parquet")
    sample = next(read_extracted_shard(ex / "shard-000000.tar"))
    img, aud = load_tokenizer(ckpts["taming"], "taming"), load_tokenizer(ckpts["specvqgan"], "specvqgan")
    stored = np.array(table["image_tokens"].to_pylist()[0]).reshape(10, 256)
    check = [0, 9]  # re-encoding all ten full-size frames on CPU would double the test's time
    assert stored[check].tolist() == img.encode(frames_to_input(sample.frames[check])).tolist()
    assert table["audio_tokens"].to_pylist()[0] == aud.encode(mel_to_input(sample.mel[None]))[0].tolist()
    meta = load_token_index(tmp_path / "tokens")
    assert meta["image_tokenizer"]["kind"] == "taming" and meta["audio_tokenizer"]["kind"] == "specvqgan"
    assert (meta["image_codebook"], meta["audio_codebook"]) == (1024, 1024)
