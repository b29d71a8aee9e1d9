"""The VQGAN tokenizers on full-size checkpoints built here in the published (Lightning) format."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch
from avtok.model.tokenizers import (
    frames_to_input,
    load_tokenizer,
    mel_to_input,
    output_to_frames,
    output_to_spec01,
)
from avtok.model.tokenizers.checkpoint_io import (
    CheckpointLoadError,
    UnsafeCheckpointError,
    extract_state_dict,
    load_pickled,
)
from avtok.model.tokenizers.vqgan import SPECVQGAN_VGGSOUND, TAMING_F16_1024, VQGAN

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _foreign_callback():
    """An object whose class lives in a module that is gone by the time the checkpoint is loaded."""
    pkg = types.ModuleType("lightning_gone")
    mod = types.ModuleType("lightning_gone.callbacks")
    sys.modules["lightning_gone"], sys.modules["lightning_gone.callbacks"] = pkg, mod
    cls = type("ModelCheckpoint", (), {"__module__": "lightning_gone.callbacks"})
    mod.ModelCheckpoint = cls
    obj = cls()
    obj.best_model_score = torch.tensor(0.5)
    obj.monitor = "val/rec_loss"
    return cls, obj


def _save_lightning_ckpt(path, state_dict, seed):
    g = torch.Generator().manual_seed(seed)
    sd = dict(state_dict)
    sd["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4, generator=g)
    sd["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(64, 3, 3, 3, generator=g)
    cls, obj = _foreign_callback()
    try:
        torch.save({"epoch": np.int64(7), "global_step": np.int64(1234), "pytorch-lightning_version": "1.0.8",
                    "state_dict": sd, "callbacks": {cls: obj}, "optimizer_states": [{"state": {}}],
                    "lr_schedulers": []}, path)
    finally:
        del sys.modules["lightning_gone.callbacks"], sys.modules["lightning_gone"]


def _random_model(cfg, seed):
    """Random weights, codebook N(0,1) (the default tiny init maps everything to 1-3 codes) and
    quant_conv rescaled so that z has unit spread like the codebook, so many codes are used."""
    torch.manual_seed(seed)
    model = VQGAN(cfg).eval()
    with torch.no_grad():
        model.quantize.embedding.weight.normal_()
        x = torch.rand(1, cfg.in_channels, 64, 64) * 2 - 1
        std = float(model.quant_conv(model.encoder(x)).std())
        model.quant_conv.weight /= std
        model.quant_conv.bias /= std
    return model


@pytest.fixture(scope="module")
def taming(tmp_path_factory):
    model = _random_model(TAMING_F16_1024, 0)
    path = tmp_path_factory.mktemp("taming") / "last.ckpt"
    _save_lightning_ckpt(path, model.state_dict(), 1)
    return model, path


@pytest.fixture(scope="module")
def specvqgan(tmp_path_factory):
    model = _random_model(SPECVQGAN_VGGSOUND, 2)
    path = tmp_path_factory.mktemp("specvqgan") / "epoch_39.ckpt"
    _save_lightning_ckpt(path, model.state_dict(), 3)
    return model, path


EXPECTED_SHAPES = {
    "encoder.conv_in.weight": (128, 3, 3, 3),
    "encoder.down.0.downsample.conv.weight": (128, 128, 3, 3),
    "encoder.down.2.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    "encoder.down.4.block.0.nin_shortcut.weight": (512, 256, 1, 1),
    "encoder.down.4.attn.1.proj_out.weight": (512, 512, 1, 1),
    "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    "encoder.norm_out.weight": (512,),
    "encoder.conv_out.weight": (256, 512, 3, 3),
    "quant_conv.weight": (256, 256, 1, 1),
    "quantize.embedding.weight": (1024, 256),
    "post_quant_conv.weight": (256, 256, 1, 1),
    "decoder.conv_in.weight": (512, 256, 3, 3),
    "decoder.up.4.attn.2.v.weight": (512, 512, 1, 1),
    "decoder.up.3.block.0.nin_shortcut.weight": (256, 512, 1, 1),
    "decoder.up.1.block.0.nin_shortcut.weight": (128, 256, 1, 1),
    "decoder.up.4.upsample.conv.weight": (512, 512, 3, 3),
    "decoder.up.0.block.2.conv2.weight": (128, 128, 3, 3),
    "decoder.norm_out.weight": (128,),
    "decoder.conv_out.weight": (3, 128, 3, 3),
    "decoder.conv_out.bias": (3,),
}


def test_taming_checkpoint_loads_with_published_layout(taming):
    model, path = taming
    tok = load_tokenizer(path, "taming")
    sd = tok.model.state_dict()
    assert len(sd) == 343
    assert sum(v.numel() for v in sd.values()) == 72_141_699
    counts = {p: sum(1 for k in sd if k.startswith(p)) for p in ("encoder.", "decoder.")}
    assert counts == {"encoder.": 144, "decoder.": 194}
    assert not any(k.startswith("loss.") for k in sd)
    for key, shape in EXPECTED_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key
    # attention only at the 16×16 level; no downsample at the last level, no upsample at level 0
    assert {k.split(".attn")[0] for k in sd if ".attn." in k} == {"encoder.down.4", "decoder.up.4"}
    assert "encoder.down.4.downsample.conv.weight" not in sd and "decoder.up.0.upsample.conv.weight" not in sd
    assert "encoder.down.3.downsample.conv.weight" in sd and "decoder.up.1.upsample.conv.weight" in sd
    for k, v in model.state_dict().items():
        assert torch.equal(sd[k], v), k
    assert (tok.kind, tok.modality, tok.grid, tok.channels, tok.codebook_size) == ("taming", "image", (16, 16), 3, 1024)
    assert tok.path == str(path.resolve()) and len(tok.fingerprint) == 64
    assert tok.record() == {"kind": "taming", "fingerprint": tok.fingerprint, "path": str(path.resolve()),
                            "modality": "image", "codebook_size": 1024}


def test_fingerprint_is_of_the_weights_not_the_file(taming, tmp_path):
    model, path = taming
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)  # a plain state dict, no Lightning wrapper or loss keys
    a, b = load_tokenizer(path, "taming"), load_tokenizer(plain, "taming")
    assert a.fingerprint == b.fingerprint
    sd = model.state_dict()
    sd["quantize.embedding.weight"] = sd["quantize.embedding.weight"].clone()
    sd["quantize.embedding.weight"][0, 0] += 1
    torch.save(sd, plain)
    assert load_tokenizer(plain, "taming").fingerprint != a.fingerprint


def test_specvqgan_checkpoint_shares_key_names(specvqgan, taming):
    _, path = specvqgan
    tok = load_tokenizer(path, "specvqgan")
    sd, ref = tok.model.state_dict(), taming[0].state_dict()
    assert list(sd) == list(ref)
    differ = {k: tuple(v.shape) for k, v in sd.items() if v.shape != ref[k].shape}
    assert differ == {"encoder.conv_in.weight": (128, 1, 3, 3), "decoder.conv_out.weight": (1, 128, 3, 3),
                      "decoder.conv_out.bias": (1,)}
    assert (tok.kind, tok.modality, tok.grid, tok.channels) == ("specvqgan", "audio", (5, 53), 1)
    assert {k.split(".attn")[0] for k in sd if ".attn." in k} == {"encoder.down.4", "decoder.up.4"}


def test_wrong_kind_is_refused_with_a_hint(specvqgan):
    with pytest.raises(CheckpointLoadError, match="1 input channel.*'specvqgan'"):
        load_tokenizer(specvqgan[1], "taming")


def test_foreign_classes_load_as_inert_placeholders(taming):
    obj = load_pickled(taming[1])
    (cls, cb), = obj["callbacks"].items()
    assert repr(cb) == "<placeholder for lightning_gone.callbacks.ModelCheckpoint>"
    assert cb.state["monitor"] == "val/rec_loss"
    assert "lightning_gone" not in sys.modules
    assert obj["epoch"] == 7


class _RunsShell:
    def __reduce__(self):
        return (os.system, ("touch avtok_pwned_marker",))


class _RunsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('touch avtok_pwned_marker')",))


@pytest.mark.parametrize("payload,name", [(_RunsShell(), "system"), (_RunsEval(), "eval")])
def test_code_executing_pickle_is_refused(tmp_path, monkeypatch, payload, name):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}, "x": payload}, path)
    with pytest.raises(UnsafeCheckpointError, match=rf"refers to \w+\.{name}, which can only be used to run code"):
        load_tokenizer(path, "taming")
    assert not (tmp_path / "avtok_pwned_marker").exists()


def test_state_dict_extraction_rules():
    t = torch.zeros(1)
    sd = extract_state_dict({"state_dict": {"first_stage_model.a": t, "transformer.b": t,
                                            "first_stage_model.loss.c": t}})
    assert list(sd) == ["a"]
    assert list(extract_state_dict({"a": t, "loss.x": t})) == ["a"]
    with pytest.raises(CheckpointLoadError, match="no tensors"):
        extract_state_dict({"epoch": 3})


def _brute_force(z, codebook):
    """Nearest entry per grid cell by explicit loops over (h, w): token n = h·W + w."""
    _, _, hh, ww = z.shape
    out = []
    for h in range(hh):
        for w in range(ww):
            v = z[0, :, h, w]
            out.append(int(torch.argmin(((codebook - v) ** 2).sum(1))))
    return torch.tensor(out)


@pytest.mark.slow
def test_taming_encode_decode_exact(taming):
    model, path = taming
    tok = load_tokenizer(path, "taming")
    g = torch.Generator().manual_seed(5)
    frames = torch.randint(0, 256, (1, 256, 256, 3), dtype=torch.uint8, generator=g)
    x = frames_to_input(frames)
    idx = tok.encode(x)
    assert idx.dtype == torch.long and idx.shape == (1, 256)
    with torch.no_grad():
        z = model.quant_conv(model.encoder(x))
        ref = _brute_force(z, model.quantize.embedding.weight)
    assert torch.equal(idx[0], ref)
    assert len(set(idx[0].tolist())) > 20  # a meaningful test: many distinct codes
    rec = tok.decode(idx)
    with torch.no_grad():
        zq = model.quantize.embedding.weight[idx[0]].view(1, 16, 16, 256).permute(0, 3, 1, 2).contiguous()
        want = model.decoder(model.post_quant_conv(zq))
    assert rec.shape == (1, 3, 256, 256) and torch.equal(rec, want)
    assert output_to_frames(rec).shape == (1, 256, 256, 3)
    # fast mode: same shape, mostly the same codes
    tok.fast = True
    fast = tok.encode(x)
    assert fast.shape == (1, 256) and (fast == idx).float().mean() >= 0.9
    assert torch.allclose(tok.decode(idx), rec, atol=0.1 * float(rec.abs().max()))


@pytest.mark.slow
def test_specvqgan_encode_265_tokens_row_major(specvqgan):
    model, path = specvqgan
    tok = load_tokenizer(path, "specvqgan")
    g = torch.Generator().manual_seed(6)
    spec01 = torch.rand(1, 80, 848, generator=g)
    x = mel_to_input(spec01)
    idx = tok.encode(x)
    assert idx.shape == (1, 265)
    with torch.no_grad():
        z = model.quant_conv(model.encoder(x))
    assert z.shape == (1, 256, 5, 53)
    assert torch.equal(idx[0], _brute_force(z, model.quantize.embedding.weight))
    rec = tok.decode(idx)
    assert rec.shape == (1, 1, 80, 848)
    assert output_to_spec01(rec).shape == (1, 80, 848)


def test_inplace_ops_are_bit_identical(taming):
    """In-place activations/residual adds (used under no_grad) change no bit of z. Batch size itself may
    change the last bits (backend kernels block differently), as it does for the reference code."""
    model = taming[0]
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        inplace = model.quant_conv(model.encoder(x))
        model.set_inplace(False)
        try:
            reference = model.quant_conv(model.encoder(x))
            per_image = torch.cat([model.quant_conv(model.encoder(x[i:i + 1])) for i in range(2)])
        finally:
            model.set_inplace(True)
    assert torch.equal(inplace, reference)
    assert torch.allclose(per_image, reference, rtol=0, atol=1e-4)


def test_input_helpers():
    frames = np.array([[[[0, 255, 128]]]], dtype=np.uint8).repeat(2, 1).repeat(2, 2)
    x = frames_to_input(frames)
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    assert x[0, :, 0, 0].tolist() == [-1.0, 1.0, float(torch.tensor(128.0) / 127.5 - 1)]
    assert np.array_equal(output_to_frames(x), frames)
    spec = np.full((2, 80, 848), 0.25, dtype=np.float16)
    m = mel_to_input(spec)
    assert m.shape == (2, 1, 80, 848) and float(m[0, 0, 0, 0]) == -0.5
    y = torch.full((1, 1, 80, 848), 1.5)
    assert float(output_to_spec01(y)[0, 0, 0]) == 1.25  # unclamped
    with pytest.raises(ValueError, match="modality"):
        load_tokenizer("x.safetensors", "patch-kmeans")
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        load_tokenizer("x", "vq")
