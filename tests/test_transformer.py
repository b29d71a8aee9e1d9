"""The audio-visual masked transformer: sizes, masking invariants, loss, inference logits."""

from __future__ import annotations

import math

import pytest
import torch
from avtok.model.config import AVConfig, preset
from avtok.model.transformer import (
    AVTransformer,
    flops_per_sample,
    grid_sincos,
    num_params,
    sample_masks,
    truncated_normal,
)

CB = 48


def tiny(**kw) -> AVTransformer:
    torch.manual_seed(0)
    return AVTransformer(preset("tiny", image_codebook=CB, audio_codebook=CB + 7, **kw))


def tokens(b: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, CB, (b, 256), generator=g), torch.randint(0, CB + 7, (b, 265), generator=g)


def test_large_has_409_4m_parameters():
    with torch.device("meta"):
        model = AVTransformer(preset("large"))
    n = num_params(model)
    assert n == 409_409_536  # by formula: 32 blocks of 12d²+13d plus tables, positions, heads
    assert abs(n - 409.4e6) / 409.4e6 < 0.005


def test_preset_parameter_formula_and_flops():
    cfg = preset("large")
    d = cfg.dim
    block = 12 * d * d + 13 * d
    expected = (32 * block + 2 * 1025 * d + 2 * 521 * d + 4 * d + (d * d + d) + d
                + 2 * (d * d + d + 2 * d + 1024) + 4 * d)
    with torch.device("meta"):
        assert num_params(AVTransformer(cfg)) == expected
    # docs/method.md, "Size and cost": 280.9 GFLOP forward, 0.843 TFLOP per training sample (261 encoder tokens)
    d, ne, nd = 1024, 261, 521
    by_hand = (24 * (24 * d * d * ne + 4 * ne * ne * d) + 8 * (24 * d * d * nd + 4 * nd * nd * d)
               + 2 * d * d * ne + 2 * d * d * nd + 2 * d * 521 * 1024)
    assert flops_per_sample(cfg) == 3 * by_hand
    assert flops_per_sample(cfg) / 3 == pytest.approx(280.9e9, rel=2e-4)
    assert flops_per_sample(cfg) == pytest.approx(0.843e12, rel=1e-3)
    assert flops_per_sample(cfg, training=False) == pytest.approx(458.4e9, rel=1e-3)


def test_truncated_normal_bounds_and_mean():
    g = torch.Generator().manual_seed(0)
    r = truncated_normal(200_000, 0.7, 0.25, 0.2, 1.0, g, "cpu")
    assert r.dtype == torch.float32 and r.min() >= 0.2 and r.max() <= 1.0
    assert r.mean().item() == pytest.approx(0.659, abs=0.003)  # truncnorm mean (docs/method.md, "Training")
    assert (r < 0.5).float().mean().item() == pytest.approx(0.22, abs=0.005)
    again = truncated_normal(5, 0.7, 0.25, 0.2, 1.0, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(again, r[:5])


@pytest.mark.parametrize("rule", ["extend", "clamp"])
def test_masks_drop_masked_first_with_static_shapes(rule):
    g = torch.Generator().manual_seed(1)
    ratios = torch.tensor([0.2, 0.35, 0.5, 0.77, 1.0])
    n, n_drop = 265, 132
    masked, keep = sample_masks(ratios, n, n_drop, rule, g)
    dropped = torch.ones(5, n, dtype=torch.bool).scatter(1, keep, False)
    n_kept = n - (n_drop if rule == "extend" else math.ceil(0.2 * n - 1e-6))
    assert keep.shape == (5, n_kept) and masked.shape == (5, n)
    assert not (dropped & ~masked).any()  # dropped ⊂ masked
    for i, r in enumerate(ratios.tolist()):
        want = math.ceil(r * n - 1e-6)
        if rule == "extend":
            want = max(want, n_drop)
        assert masked[i].sum().item() == want
    # every kept index is unique and a masked kept token ranks after every dropped one
    assert all(len(set(row.tolist())) == n_kept for row in keep)


def test_training_forward_loss_on_masked_positions_only():
    model = tiny()
    img, aud = tokens()
    g = torch.Generator().manual_seed(3)
    loss, stats = model(img, aud, generator=g)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(stats) == {f"{k}_{m}" for k in ("nll", "acc", "mask") for m in ("image", "audio")}
    assert 0.5 <= stats["mask_image"].item() <= 1.0  # "extend": at least the dropped half is masked
    # Same generator seed → same masks; changing a token at a position that is visible must not change
    # the set of loss terms, changing the targets at masked positions must change the loss.
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    mi, _ = sample_masks(model.sample_ratios(4, g1, "cpu")[0], 256, 128, "extend", g1)
    model.eval()
    base, _ = model(img, aud, generator=torch.Generator().manual_seed(3))
    img2 = img.clone()
    img2[mi] = (img2[mi] + 1) % CB  # change the targets at masked image positions only
    changed, _ = model(img2, aud, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(base, changed)
    # the loss equals label-smoothed CE over exactly the masked positions (recompute by hand)
    with torch.no_grad():
        ri, ra = model.sample_ratios(4, g2, "cpu")
        mi2, _ = sample_masks(ri, 256, 128, "extend", g2)
        assert torch.equal(mi, mi2)


def test_loss_matches_manual_cross_entropy():
    model = tiny().eval()
    img, aud = tokens(3)
    captured = {}

    def hook(_m, _inp, out):
        captured.setdefault("logits", []).append(out)

    hi = model.image_head.register_forward_hook(hook)
    ha = model.audio_head.register_forward_hook(hook)
    g = torch.Generator().manual_seed(5)
    loss, _ = model(img, aud, generator=g)
    hi.remove()
    ha.remove()
    g = torch.Generator().manual_seed(5)
    ri, ra = model.sample_ratios(3, g, "cpu")
    mi, _ = sample_masks(ri, 256, 128, "extend", g)
    ma, _ = sample_masks(ra, 265, 132, "extend", g)
    li, la = captured["logits"]
    ce_i = torch.nn.functional.cross_entropy(li[mi], img[mi], label_smoothing=0.1, reduction="sum")
    ce_a = torch.nn.functional.cross_entropy(la[ma], aud[ma], label_smoothing=0.1, reduction="sum")
    assert loss.item() == pytest.approx(((ce_i + ce_a) / (mi.sum() + ma.sum())).item(), rel=1e-5)


def test_gradients_reach_everything_and_detach_option():
    for detach in (False, True):
        model = tiny(detach_tied=detach)
        img, aud = tokens()
        loss, _ = model(img, aud, generator=torch.Generator().manual_seed(0))
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert missing == []
    # with a detached tied weight the output side sends no gradient to the table, so the row of a token
    # that never appears in the input (id 5; every input token is 1 or [MASK]) gets none; live, it does.
    model = tiny(detach_tied=True)
    img = torch.full((2, 256), 1)
    aud = torch.full((2, 265), 1)
    model(img, aud, generator=torch.Generator().manual_seed(0))[0].backward()
    assert model.image_embed.weight.grad[5].abs().sum() == 0
    model = tiny(detach_tied=False)
    model(img, aud, generator=torch.Generator().manual_seed(0))[0].backward()
    assert model.image_embed.weight.grad[5].abs().sum() > 0


def test_gradients_are_the_same_bits_on_every_run_at_two_threads(two_threads):
    # The tiny preset's [521, 64] modality rows pass the CPU grain above which the backward of table[ids]
    # adds into the 2-row table with parallel atomic adds: the modality tables' gradients (and so a
    # training run) came out different from run to run. Repeats of one backward must agree bit for bit.
    model = tiny()
    img, aud = tokens(8)
    runs = []
    for _ in range(12):
        model.zero_grad()
        model(img, aud, generator=torch.Generator().manual_seed(0))[0].backward()
        runs.append({n: p.grad.clone() for n, p in model.named_parameters()})
    differ = sorted({n for run in runs[1:] for n, g in run.items() if not torch.equal(g, runs[0][n])})
    assert differ == []
    # the table's gradient is the sum of its rows' gradients: image rows to row 0, audio rows to row 1
    per_row = runs[0]["pos_embed"][0]
    assert torch.allclose(runs[0]["modality_embed"][0], per_row[:256].sum(0), atol=1e-6)
    assert torch.allclose(runs[0]["modality_embed"][1], per_row[256:].sum(0), atol=1e-6)


def test_forward_logits_shapes_and_mask_semantics():
    model = tiny().eval()
    img, aud = tokens(2)
    known_i = torch.ones(2, 256, dtype=torch.bool)
    known_a = torch.zeros(2, 265, dtype=torch.bool)
    with torch.no_grad():
        li, la = model.forward_logits(img, aud, known_i, known_a)
        assert li.shape == (2, 256, CB) and la.shape == (2, 265, CB + 7)
        assert li.dtype == la.dtype == torch.float32
        # values at unknown positions are ignored
        aud_other = (aud + 3) % (CB + 7)
        li2, la2 = model.forward_logits(img, aud_other, known_i, known_a)
        assert torch.equal(la, la2) and torch.equal(li, li2)
        # a broadcast [265] mask is accepted; the known values matter
        li3, la3 = model.forward_logits(img, aud_other, known_i, torch.ones(265, dtype=torch.bool))
        assert not torch.allclose(la3, la)
        # batch independence
        li4, la4 = model.forward_logits(img[:1], aud[:1], known_i[:1], known_a[:1])
        assert torch.allclose(la4, la[:1], atol=1e-5)


def test_ratio_per_batch_and_config_validation():
    model = tiny(ratio_per="batch")
    ri, ra = model.sample_ratios(6, torch.Generator().manual_seed(0), "cpu")
    assert ri.unique().numel() == 1 and ra.unique().numel() == 1
    with pytest.raises(ValueError, match="drop_rule"):
        AVConfig(drop_rule="bogus")
    with pytest.raises(ValueError, match="unknown AVConfig keys"):
        AVConfig.from_dict({"dim": 8, "nope": 1})
    assert AVConfig.from_dict(preset("base").to_dict()) == preset("base")


def test_sincos_position_init():
    """pos_init="sincos": each position's table row is sin/cos of its (row, column) on its modality's grid
    at RMS 0.02; every other parameter is what the normal init draws."""
    t = grid_sincos(16)
    assert t.shape == (521, 16) and t.dtype == torch.float32
    assert t.pow(2).mean().sqrt().item() == pytest.approx(0.02, rel=1e-6)

    def axis(pos: int) -> list[float]:  # 4 sines then 4 cosines, frequency k = 10000^(-k/4), at RMS 0.02
        return [0.02 * math.sqrt(2) * f(pos * 10000 ** (-k / 4)) for f in (math.sin, math.cos) for k in range(4)]

    # image position 3·16 + 5 (row 3, column 5): the row's features, then the column's
    assert torch.allclose(t[3 * 16 + 5], torch.tensor(axis(3) + axis(5)), atol=1e-7)
    # audio position 2·53 + 40 (row 2, column 40) follows the 256 image positions
    assert torch.allclose(t[256 + 2 * 53 + 40], torch.tensor(axis(2) + axis(40)), atol=1e-7)
    plain, sincos = tiny(), tiny(pos_init="sincos")
    assert torch.equal(sincos.pos_embed[0], grid_sincos(64)) and torch.equal(sincos.dec_pos_embed[0], grid_sincos(64))
    for (name, p), q in zip(plain.named_parameters(), sincos.parameters(), strict=True):
        assert torch.equal(p, q) == (name not in ("pos_embed", "dec_pos_embed")), name
    assert sincos.pos_embed.requires_grad  # a start, trained like the rest
    with pytest.raises(ValueError, match="pos_init must be"):
        AVConfig(pos_init="rope")
    with pytest.raises(ValueError, match="divisible by 4"):
        AVConfig(pos_init="sincos", dim=30, heads=1)


def test_grad_checkpoint_gives_same_gradients():
    a, b = tiny(), tiny(grad_checkpoint=True)
    img, aud = tokens()
    for m in (a, b):
        m(img, aud, generator=torch.Generator().manual_seed(9))[0].backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6), n


def _encode_one_by_one(model: AVTransformer, img: torch.Tensor, aud: torch.Tensor,
                       visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The "masked" rule spelled out per sample: encode exactly the visible tokens (no padding, no groups)."""
    outs_i, outs_a = [], []
    for b in range(img.shape[0]):
        x = model._embed(img[b:b + 1], aud[b:b + 1])[:, visible[b]]
        full = model.mask_token.expand(1, visible.shape[1], -1).clone()
        if visible[b].any():
            full[:, visible[b]] = model.decoder_embed(model.norm(model._run(model.blocks, x)))
        li, la = model._decode(full)
        outs_i.append(li)
        outs_a.append(la)
    return torch.cat(outs_i), torch.cat(outs_a)


def test_masked_rule_encodes_only_visible_tokens():
    model = tiny(drop_rule="masked").eval()
    img, aud = tokens(6)
    g = torch.Generator().manual_seed(4)
    known_i = torch.rand(6, 256, generator=g) < torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0, 0.3])[:, None]
    known_a = torch.rand(6, 265, generator=g) < torch.tensor([0.0, 0.7, 0.0, 0.2, 1.0, 0.6])[:, None]
    with torch.no_grad():
        li, la = model.forward_logits(img, aud, known_i, known_a)
        ri, ra = _encode_one_by_one(model, img, aud, torch.cat([known_i, known_a], dim=1))
    assert torch.isfinite(li).all() and torch.isfinite(la).all()  # sample 0 shows nothing at all
    # groups of different lengths with padded keys masked out give each sample its own encoding
    assert torch.allclose(li, ri, atol=1e-5) and torch.allclose(la, ra, atol=1e-5)
    # the value of a masked token never matters, not even through the encoder's attention
    img2 = torch.where(known_i, img, (img + 5) % CB)
    with torch.no_grad():
        li2, la2 = model.forward_logits(img2, aud, known_i, known_a)
    assert torch.equal(li, li2) and torch.equal(la, la2)


def test_masked_rule_training_loss_and_gradients():
    model = tiny(drop_rule="masked", full_mask_prob=0.5)
    img, aud = tokens(5)
    captured = []
    hooks = [h.register_forward_hook(lambda _m, _i, out: captured.append(out))
             for h in (model.image_head, model.audio_head)]
    loss, stats = model(img, aud, generator=torch.Generator().manual_seed(2))
    for h in hooks:
        h.remove()
    g = torch.Generator().manual_seed(2)
    ri, ra = model.sample_ratios(5, g, "cpu")
    mi, _ = sample_masks(ri, 256, 128, "masked", g)
    ma, _ = sample_masks(ra, 265, 132, "masked", g)
    # nothing beyond the drawn ratio is masked ("extend" would mask at least half)
    assert [int(v) for v in mi.sum(1)] == [math.ceil(r * 256 - 1e-6) for r in ri.tolist()]
    assert stats["mask_image"].item() == pytest.approx(mi.float().mean().item())
    li, la = captured
    with torch.no_grad():
        ref_i, ref_a = _encode_one_by_one(model, img, aud, ~torch.cat([mi, ma], dim=1))
    assert torch.allclose(li, ref_i, atol=1e-5) and torch.allclose(la, ref_a, atol=1e-5)
    ce = (torch.nn.functional.cross_entropy(li[mi], img[mi], label_smoothing=0.1, reduction="sum")
          + torch.nn.functional.cross_entropy(la[ma], aud[ma], label_smoothing=0.1, reduction="sum"))
    assert loss.item() == pytest.approx((ce / (mi.sum() + ma.sum())).item(), rel=1e-5)
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()] == []
