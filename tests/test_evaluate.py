"""`avtok eval` on a small token folder and a random tiny checkpoint (token metrics; no waveforms)."""
# The waveform path (tokenizer decode, vocoder, oracle) runs end to end in tests/test_demo.py.

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from avtok.cli.main import cli
from avtok.model import evaluate as E
from avtok.model import token_scores as S
from avtok.model.checkpoint import save_checkpoint
from avtok.model.config import preset
from avtok.model.token_shards import make_meta, write_token_index, write_token_shard
from avtok.model.transformer import AVTransformer
from click.testing import CliRunner

CB = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def _tokens(tmp_path, n=6):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tok = {"kind": "patch-kmeans", "fingerprint": "0" * 64, "path": "/nonexistent", "codebook_size": CB}
    meta = make_meta({**tok, "modality": "image"}, {**tok, "modality": "audio"}, {"recipe": "test"}, CB, CB)
    img = rng.integers(0, CB, size=(n, 10, 256))
    aud = rng.integers(0, CB, size=(n, 265))
    entry = write_token_shard(tmp_path / "tokens-000000.parquet", meta, [f"v{i}" for i in range(n)],
                              ["a"] * n, ["test"] * n, img, aud)
    write_token_index(tmp_path, meta, [entry])
    return img, aud


def _checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = preset("tiny", image_codebook=CB, audio_codebook=CB)
    model = AVTransformer(cfg)
    rec = {"kind": "patch-kmeans", "fingerprint": "0" * 64, "path": "/nonexistent", "codebook_size": CB}
    return save_checkpoint({"model": model.state_dict(), "ema": None, "config": cfg.to_dict(), "step": 7,
                            "tokenizers": {"image": rec, "audio": rec}}, tmp_path / "run", 7)


def test_derangement_has_no_fixed_points() -> None:
    for n in (2, 3, 10, 57):
        p = S.derangement(n, seed=n)
        assert sorted(p) == list(range(n)) and (p != np.arange(n)).all()


def test_evaluate_token_metrics(tmp_path) -> None:
    _tokens(tmp_path / "tokens")
    ckpt = _checkpoint(tmp_path)
    opts = E.EvalOptions(waveforms=False, seeds=2, steps=2, batch=6, cfg_scales=(0.0, 3.0),
                         sweep_directions=("image2audio", "audio2image"))
    res = E.evaluate(ckpt, tmp_path / "tokens", opts)
    assert res["clips"] == 6 and res["eval_frame"] == 5 and res["step"] == 7
    for direction in ("image2audio", "audio2image"):
        for ratio in ("ratio_1", "ratio_0.5"):
            r = res["token_metrics"][direction][ratio]
            for cond in ("true", "masked", "shuffled"):
                # an untrained model is near uniform: NLL ≈ log(32)
                assert abs(r[cond]["nll"] - np.log(CB)) < 1.0
                assert 0 <= r[cond]["accuracy"] <= 1
            assert r["delta_nll_uncond"] == pytest.approx(r["masked"]["nll"] - r["true"]["nll"])
        guided = res["token_metrics"][direction]["ratio_1"]["guided_nll"]
        assert guided["0"] == pytest.approx(res["token_metrics"][direction]["ratio_1"]["true"]["nll"], rel=1e-5)
        rows = res["cfg_sweep"][direction]
        assert [row["cfg"] for row in rows] == [0.0, 3.0]
        for row in rows:
            assert 0 <= row["pairwise_hamming"] <= 1 and 0 < row["codebook_entropy_bits"] <= np.log2(CB)
    table = E.markdown_table(res)
    assert "| image2audio | 1 |" in table and "CFG sweep, audio2image" in table


def test_token_metrics_perfect_model_and_masking() -> None:
    """A model that copies the condition (audio token j = image token j) is exact only with the true condition."""

    class Copy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward_logits(self, img, aud, k_img, k_aud):
            li = torch.zeros(*img.shape, CB)
            la = torch.zeros(*aud.shape, CB)
            src = torch.where(k_img, img, torch.zeros_like(img))
            la[:, :256].scatter_(2, src[..., None], 50.0 * k_img[..., None].float())
            return li, la

    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, CB, (6, 256), generator=g)
    aud = torch.cat([img, torch.randint(0, CB, (6, 9), generator=g)], dim=1)
    res = S.token_metrics(Copy(), img, aud, batch=4, cfg_scales=(0.0,))["image2audio"]["ratio_1"]
    assert res["true"]["accuracy"] > 0.95
    assert res["masked"]["nll"] == pytest.approx(np.log(CB), rel=1e-6)
    assert res["shuffled"]["accuracy"] < 0.2 and res["delta_nll_uncond"] > 3


def test_cli_eval_no_waveforms(tmp_path) -> None:
    _tokens(tmp_path / "tokens")
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "ev" / "eval.json"
    r = CliRunner().invoke(cli, ["eval", "--checkpoint", str(ckpt), "--shards", str(tmp_path / "tokens"),
                                 "--out", str(out), "--no-waveforms", "--seeds", "1", "--steps", "2",
                                 "--cfg-scales", "0,2"])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert [row["cfg"] for row in res["cfg_sweep"]["image2audio"]] == [0.0, 2.0]
    assert out.with_suffix(".md").read_text().startswith("# avtok eval")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = CliRunner().invoke(cli, ["eval", "--checkpoint", str(bad), "--shards", str(tmp_path / "tokens"),
                                 "--out", str(tmp_path / "x.json")])
    assert r.exit_code != 0 and "not an avtok checkpoint" in r.output
