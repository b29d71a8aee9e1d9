"""The MaskGIT sampler: schedule, fixed tokens, guidance, seeding, inpainting (docs/method.md, "Sampling")."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from avtok.model.geometry import AUDIO_TOKENS as N_AUDIO
from avtok.model.geometry import IMAGE_TOKENS as N_IMAGE
from avtok.model.sampler import guidance_scale, sample, seconds_to_audio_hole
from torch import nn

K_IMG, K_AUD = 32, 24


class StandIn(nn.Module):
    """A small deterministic model with the AVTransformer inference API; records what it was given."""

    def __init__(self, seed: int = 0, d: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb_i = nn.Parameter(torch.randn(K_IMG + 1, d, generator=g))
        self.emb_a = nn.Parameter(torch.randn(K_AUD + 1, d, generator=g))
        self.pos = nn.Parameter(torch.randn(N_IMAGE + N_AUDIO, d, generator=g))
        self.head_i = nn.Parameter(torch.randn(d, K_IMG, generator=g))
        self.head_a = nn.Parameter(torch.randn(d, K_AUD, generator=g))
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.cfg = SimpleNamespace(image_tokens=N_IMAGE, audio_tokens=N_AUDIO)  # what the sampler reads

    def forward_logits(self, image_tokens, audio_tokens, image_known, audio_known):
        self.calls.append((image_tokens.clone(), audio_tokens.clone(), image_known.clone(), audio_known.clone()))
        # values at unknown positions must not matter: replace them by the [MASK] row
        i = self.emb_i[torch.where(image_known, image_tokens, K_IMG)]
        a = self.emb_a[torch.where(audio_known, audio_tokens, K_AUD)]
        x = torch.cat([i, a], dim=1) + self.pos
        h = torch.tanh(x + 4 * x.mean(dim=1, keepdim=True))
        return 3 * h[:, :N_IMAGE] @ self.head_i, 3 * h[:, N_IMAGE:] @ self.head_a


def _tokens(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, K_IMG, (batch, N_IMAGE), generator=g), torch.randint(0, K_AUD, (batch, N_AUDIO), generator=g)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def expected_revealed(n0: int, steps: int) -> list[int]:
    """Tokens revealed per step by the mask_len rule (docs/method.md, "Sampling") (the last step's samples then fill the rest)."""
    unknown, out = n0, []
    for t in range(steps):
        keep = max(1, min(unknown - 1, math.floor(n0 * math.cos(math.pi / 2 * (t + 1) / steps))))
        out.append(unknown - keep)
        unknown = keep
    return out


def _run_recording(model, task, steps=30, **kw):
    known_trace: list[torch.Tensor] = []

    def cb(t, ki, ka):
        known_trace.append(torch.cat([ki, ka], dim=1).clone())

    out = sample(model, task, steps=steps, generator=_gen(), callback=cb, **kw)
    return out, known_trace


def test_reference_counts_match_the_published_schedule() -> None:
    # docs/method.md: N0=265, T=30 runs 1,1,2,2,4,...,14,13 counting the final fill of the last masked one
    c = expected_revealed(265, 30)
    assert c[:5] == [1, 1, 2, 2, 4] and c[-2:] == [14, 12] and sum(c) == 264
    c15 = expected_revealed(265, 15)
    assert c15[:3] == [2, 4, 7] and c15[-1] + 1 == 27


@pytest.mark.parametrize(
    "task,n0", [("image2audio", 265), ("audio2image", 256), ("joint", 521), ("inpaint", None)]
)
def test_revealed_per_step_follows_cosine_schedule(task: str, n0: int | None) -> None:
    model = StandIn()
    img, aud = _tokens(2)
    hole = seconds_to_audio_hole(3.0, 6.0)
    kw = {"image2audio": {"image_tokens": img}, "audio2image": {"audio_tokens": aud},
          "joint": {"num_samples": 2}, "inpaint": {"image_tokens": img, "audio_tokens": aud, "audio_hole": hole}}[task]
    (out_i, out_a), trace = _run_recording(model, task, cfg=2.0, **kw)
    if n0 is None:
        n0 = int(hole.sum())
    start_known = N_IMAGE + N_AUDIO - n0
    counts = [int(trace[0][0].sum()) - start_known]
    counts += [int(trace[t][0].sum() - trace[t - 1][0].sum()) for t in range(1, 30)]
    assert counts == expected_revealed(n0, 30)
    for b in range(2):
        per_step = [int(trace[0][b].sum()) - start_known] + [
            int(trace[t][b].sum() - trace[t - 1][b].sum()) for t in range(1, 30)]
        assert per_step == expected_revealed(n0, 30)
    assert out_i.shape == (2, N_IMAGE) and out_a.shape == (2, N_AUDIO)
    assert out_i.dtype == torch.long and out_a.dtype == torch.long
    assert int(out_i.max()) < K_IMG and int(out_a.max()) < K_AUD


def test_revealed_tokens_never_change_and_output_keeps_them() -> None:
    model = StandIn()
    (out_i, out_a), trace = _run_recording(model, "joint", num_samples=3)
    # the model's inputs at step t+1 are the state after step t: a position known once stays known
    # with the same id until the end, and the output carries that id
    calls = model.calls
    final = torch.cat([out_i, out_a], dim=1)
    for t in range(len(calls) - 1):
        k_now = torch.cat([calls[t][2], calls[t][3]], dim=1)
        k_next = torch.cat([calls[t + 1][2], calls[t + 1][3]], dim=1)
        tok_now = torch.cat([calls[t][0], calls[t][1]], dim=1)
        tok_next = torch.cat([calls[t + 1][0], calls[t + 1][1]], dim=1)
        assert bool((k_next | ~k_now).all()), "a revealed token was re-masked"
        assert torch.equal(tok_next[k_now], tok_now[k_now]), "a revealed token changed"
        assert torch.equal(final[k_now], tok_now[k_now])


def test_condition_tokens_untouched_and_uncond_masks_condition() -> None:
    model = StandIn()
    img, aud = _tokens(2)
    out_i, out_a = sample(model, "image2audio", image_tokens=img, steps=8, cfg=3.0, generator=_gen())
    assert torch.equal(out_i, img)
    for it, _at, ik, ak in model.calls:
        assert it.shape[0] == 4  # cond and uncond in one batch
        assert bool(ik[:2].all()) and not bool(ik[2:].any())  # uncond: the image fully masked
        assert torch.equal(ak[:2], ak[2:]) and torch.equal(it[:2], img)
    model2 = StandIn()
    out_i, out_a = sample(model2, "audio2image", audio_tokens=aud, steps=8, cfg=3.0, generator=_gen())
    assert torch.equal(out_a, aud)
    assert all(bool(c[3][:2].all()) and not bool(c[3][2:].any()) for c in model2.calls)


def reference_unguided(model, image_tokens, steps, tau, gen):
    """An independent, loop-per-sample transcription of the loop in docs/method.md (image->audio, no guidance)."""
    b = image_tokens.shape[0]
    audio = torch.zeros(b, N_AUDIO, dtype=torch.long)
    known = torch.zeros(b, N_AUDIO, dtype=torch.bool)
    ik = torch.ones_like(image_tokens, dtype=torch.bool)
    for t in range(steps):
        _, logits = model.forward_logits(image_tokens, audio, ik, known)
        logp = torch.log_softmax(logits.float(), -1)
        u = torch.rand(logp.shape, generator=gen).clamp(1e-20, 1 - 1e-7)
        drawn = (logp - torch.log(-torch.log(u))).argmax(-1)
        drawn = torch.where(known, audio, drawn)
        p = logp.gather(-1, drawn[..., None])[..., 0]
        r = (t + 1) / steps
        u2 = torch.rand((b, N_IMAGE + N_AUDIO), generator=gen).clamp(1e-20, 1 - 1e-7)[:, N_IMAGE:]
        conf = p + tau * (1 - r) * -torch.log(-torch.log(u2))
        conf[known] = math.inf
        for i in range(b):
            n_unk = int((~known[i]).sum())
            m = max(1, min(n_unk - 1, math.floor(N_AUDIO * math.cos(math.pi / 2 * r))))
            masked = set(torch.argsort(conf[i], stable=True)[:m].tolist())
            for j in range(N_AUDIO):
                if j not in masked:
                    known[i, j] = True
            audio[i] = torch.where(known[i], drawn[i], audio[i])
        last = drawn
    return last


def test_cfg_zero_equals_unguided_bit_for_bit() -> None:
    img, _ = _tokens(3)
    ref = reference_unguided(StandIn(), img, 12, 4.5, _gen(7))
    for schedule in ("constant", "linear"):
        model = StandIn()
        _, out = sample(model, "image2audio", image_tokens=img, steps=12, cfg=0.0, cfg_schedule=schedule,
                        generator=_gen(7))
        assert torch.equal(out, ref)
        assert all(c[0].shape[0] == 3 for c in model.calls)  # no uncond pass at w = 0
    _, guided = sample(StandIn(), "image2audio", image_tokens=img, steps=12, cfg=3.0, generator=_gen(7))
    assert not torch.equal(guided, ref)


def test_guided_logits_formula() -> None:
    from avtok.model.sampler import _logits

    model = StandIn()
    img, aud = _tokens(2)
    tokens = torch.cat([img, aud], 1)
    known = torch.cat([torch.ones(2, N_IMAGE, dtype=torch.bool), torch.zeros(2, N_AUDIO, dtype=torch.bool)], 1)
    (_, guided), _ = _logits(model, tokens, known, N_IMAGE, "image", 3.0)
    _, c = StandIn().forward_logits(img, aud, known[:, :N_IMAGE], known[:, N_IMAGE:])
    _, u = StandIn().forward_logits(img, aud, ~known[:, :N_IMAGE], known[:, N_IMAGE:])
    torch.testing.assert_close(guided, c + 3.0 * (c - u))
    assert guidance_scale(3.0, "linear", 0, 30) == pytest.approx(0.1)
    assert guidance_scale(3.0, "linear", 29, 30) == 3.0
    assert guidance_scale(3.0, "constant", 0, 30) == 3.0
    with pytest.raises(ValueError, match="cfg schedule"):
        guidance_scale(3.0, "cosine", 0, 30)


def test_nucleus_is_the_smallest_set_reaching_top_p() -> None:
    from avtok.model.sampler import nucleus

    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15], [0.97, 0.01, 0.01, 0.01]])
    logits = probs.log()
    assert nucleus(logits, 0.7).tolist() == [[True, False, True, False], [True, False, False, False]]
    assert nucleus(logits, 0.8).tolist() == [[True, False, True, False], [True, False, False, False]]
    assert nucleus(logits, 0.81).tolist() == [[True, False, True, True], [True, False, False, False]]
    assert nucleus(logits, 0.01).tolist() == [[True, False, False, False], [True, False, False, False]]
    assert nucleus(logits, 1.0).all()


def test_guided_logits_keep_only_the_conditional_nucleus() -> None:
    from avtok.model.sampler import _logits, nucleus

    img, aud = _tokens(2)
    tokens = torch.cat([img, aud], 1)
    known = torch.cat([torch.ones(2, N_IMAGE, dtype=torch.bool), torch.zeros(2, N_AUDIO, dtype=torch.bool)], 1)
    _, c = StandIn().forward_logits(img, aud, known[:, :N_IMAGE], known[:, N_IMAGE:])
    _, u = StandIn().forward_logits(img, aud, ~known[:, :N_IMAGE], known[:, N_IMAGE:])
    (_, guided), _ = _logits(StandIn(), tokens, known, N_IMAGE, "image", 3.0, top_p=0.7)
    keep = nucleus(c, 0.7)
    assert 0 < keep.sum(-1).min() and keep.sum(-1).max() < K_AUD  # the test model's nuclei are proper subsets
    torch.testing.assert_close(guided[keep], (c + 3.0 * (c - u))[keep])
    assert torch.isneginf(guided[~keep]).all()
    # unguided (w = 0, joint) logits keep to the same nucleus: guidance on and off differ only by guidance
    (_, plain_c), _ = _logits(StandIn(), tokens, known, N_IMAGE, None, 0.0, top_p=0.7)
    assert torch.equal(plain_c[keep], c[keep]) and torch.isneginf(plain_c[~keep]).all()
    _, first0 = sample(StandIn(), "image2audio", image_tokens=img, steps=1, cfg=0.0, top_p=0.7, generator=_gen(2))
    assert keep.gather(-1, first0.unsqueeze(-1)).all()
    # sampling with it never draws a token outside the conditional's nucleus at the first step
    _, first = sample(StandIn(), "image2audio", image_tokens=img, steps=1, cfg=3.0, top_p=0.7, generator=_gen(2))
    assert keep.gather(-1, first.unsqueeze(-1)).all()
    # top_p = 1 is the paper's sampler, bit for bit
    _, plain = sample(StandIn(), "image2audio", image_tokens=img, steps=6, cfg=3.0, generator=_gen(5))
    _, one = sample(StandIn(), "image2audio", image_tokens=img, steps=6, cfg=3.0, top_p=1.0, generator=_gen(5))
    assert torch.equal(plain, one)
    with pytest.raises(ValueError, match="top_p"):
        sample(StandIn(), "image2audio", image_tokens=img, steps=2, top_p=0.0)


def test_same_seed_same_output_other_seed_differs() -> None:
    img, aud = _tokens(2)
    a = sample(StandIn(), "joint", num_samples=2, steps=10, generator=_gen(3))
    b = sample(StandIn(), "joint", num_samples=2, steps=10, generator=_gen(3))
    c = sample(StandIn(), "joint", num_samples=2, steps=10, generator=_gen(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    d = sample(StandIn(), "image2audio", image_tokens=img, steps=10, cfg=3.0, cfg_schedule="linear", generator=_gen(3))
    e = sample(StandIn(), "image2audio", image_tokens=img, steps=10, cfg=3.0, cfg_schedule="linear", generator=_gen(3))
    assert torch.equal(d[1], e[1])


def test_inpainting_keeps_everything_outside_the_hole() -> None:
    img, aud = _tokens(2)
    hole = seconds_to_audio_hole(3.0, 6.0)
    model = StandIn()
    out_i, out_a = sample(model, "inpaint", image_tokens=img, audio_tokens=aud, audio_hole=hole, steps=10,
                          cfg=3.0, generator=_gen())
    assert torch.equal(out_i, img)
    assert torch.equal(out_a[:, ~hole], aud[:, ~hole])
    assert not torch.equal(out_a[:, hole], aud[:, hole])
    for _it, at, _ik, ak in model.calls:
        assert bool(ak[:, ~hole].all())  # outside the hole is known in both passes
        assert torch.equal(at[:, ~hole], torch.cat([aud, aud])[:, ~hole])
    # a per-sample hole: different sizes in one batch
    holes = torch.stack([seconds_to_audio_hole(0.0, 2.0), seconds_to_audio_hole(8.0, 10.0)])
    out_i, out_a = sample(StandIn(), "inpaint", image_tokens=img, audio_tokens=aud, audio_hole=holes, steps=10,
                          generator=_gen())
    assert torch.equal(out_a[~holes], aud[~holes])


def test_seconds_to_audio_hole_columns() -> None:
    def cols(h: torch.Tensor) -> list[int]:
        grid = h.view(5, 53)
        assert all(torch.equal(grid[r], grid[0]) for r in range(5))  # every band of a column
        return grid[0].nonzero().flatten().tolist()

    # token column w holds mel columns 16w..16w+15, centred at samples (16w+6)*256 ... (16w+21)*256
    # 3.0 s = sample 66150 -> mel column 252.4 -> token column 15; 6.0 s -> mel col 510.8 -> token col 31
    assert cols(seconds_to_audio_hole(3.0, 6.0)) == list(range(14, 33))
    assert cols(seconds_to_audio_hole(0.0, 10.0)) == list(range(53))
    assert cols(seconds_to_audio_hole(0.0, 0.01)) == [0, 1]
    assert cols(seconds_to_audio_hole(9.99, 10.0)) == [51, 52]
    assert cols(seconds_to_audio_hole(-5.0, 12.0)) == list(range(53))
    assert seconds_to_audio_hole(3.0, 6.0).shape == (265,) and seconds_to_audio_hole(3.0, 6.0).dtype == torch.bool
    with pytest.raises(ValueError, match="empty audio hole"):
        seconds_to_audio_hole(5.0, 4.0)
    # the column edges come from geometry: column w begins half a hop before mel frame 16w + 6
    from avtok.model.geometry import AUDIO_COLUMN_S, audio_column_edge_s

    assert audio_column_edge_s(15) == ((16 * 15 + 6) * 256 - 128) / 22050
    assert AUDIO_COLUMN_S == pytest.approx(audio_column_edge_s(16) - audio_column_edge_s(15)) == 4096 / 22050
    just_in = audio_column_edge_s(20) + 1e-6  # a hole starting just inside column 20 hits it (and 19)
    assert cols(seconds_to_audio_hole(just_in, just_in + 0.01)) == [19, 20, 21]


def test_bad_arguments() -> None:
    img, aud = _tokens(1)
    with pytest.raises(ValueError, match="unknown task"):
        sample(StandIn(), "text2audio", image_tokens=img)
    with pytest.raises(ValueError, match="needs image_tokens"):
        sample(StandIn(), "image2audio")
    with pytest.raises(ValueError, match="shape"):
        sample(StandIn(), "image2audio", image_tokens=img[:, :100])
    with pytest.raises(ValueError, match="inpaint needs"):
        sample(StandIn(), "inpaint", audio_tokens=aud)
    # a single unbatched [256] input works
    out_i, out_a = sample(StandIn(), "image2audio", image_tokens=img[0], steps=3, generator=_gen())
    assert out_a.shape == (1, N_AUDIO)


def test_with_the_tiny_avtransformer() -> None:
    from avtok.model.config import preset
    from avtok.model.transformer import AVTransformer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = AVTransformer(preset("tiny", image_codebook=K_IMG, audio_codebook=K_AUD)).eval()
    img, aud = _tokens(2)
    trace: list[int] = []
    out_i, out_a = sample(model, "image2audio", image_tokens=img, steps=6, cfg=3.0, generator=_gen(5),
                          callback=lambda t, ki, ka: trace.append(int(ka[0].sum())))
    assert torch.equal(out_i, img) and out_a.shape == (2, N_AUDIO) and int(out_a.max()) < K_AUD
    assert [b - a for a, b in zip([0] + trace[:-1], trace, strict=True)] == expected_revealed(N_AUDIO, 6)
    again = sample(model, "image2audio", image_tokens=img, steps=6, cfg=3.0, generator=_gen(5))
    assert torch.equal(again[1], out_a)
    out_i, out_a = sample(model, "audio2image", audio_tokens=aud, steps=4, cfg=3.0, generator=_gen(5))
    assert torch.equal(out_a, aud) and int(out_i.max()) < K_IMG


def test_image_first_joint_decodes_the_picture_then_the_sound_given_it() -> None:
    model = StandIn()
    (img, aud), trace = _run_recording(model, "joint", steps=8, num_samples=2, joint_order="image-first")
    assert len(trace) == 16 and len(model.calls) == 16
    for t in range(8):  # picture phase: the sound is masked in every input and never revealed
        assert not bool(model.calls[t][3].any()) and not bool(trace[t][:, N_IMAGE:].any())
        assert [int(n) for n in trace[t][:, :N_IMAGE].sum(1)] == [sum(expected_revealed(256, 8)[:t + 1])] * 2
    for t in range(8, 16):  # sound phase: image2audio with the picture just made as the condition
        # rows 0-1 the conditional pass (picture known), rows 2-3 the unconditional one (cfg defaults to 3)
        assert bool(model.calls[t][2][:2].all()) and torch.equal(model.calls[t][0][:2], img)
        assert not bool(model.calls[t][2][2:].any())
    # the sound phase fills every audio position; a picture made this way is drawn from the picture's own
    # schedule, so it differs from the one-schedule joint with the same seed
    assert aud.shape == (2, N_AUDIO)
    together, _ = sample(StandIn(), "joint", steps=8, num_samples=2, generator=_gen())
    assert not torch.equal(together, img)
    with pytest.raises(ValueError, match="joint_order"):
        sample(StandIn(), "joint", steps=2, num_samples=1, joint_order="audio-first")


def test_token_temperature_sharpens_conditioned_draws_only() -> None:
    from avtok.model.sampler import _draw_gumbel, _logits

    img, aud = _tokens(2)
    tokens = torch.cat([img, aud], 1)
    known = torch.cat([torch.ones(2, N_IMAGE, dtype=torch.bool), torch.zeros(2, N_AUDIO, dtype=torch.bool)], 1)
    # one step draws every audio token at once: softmax(guided logits / T) through the Gumbel-max of the
    # sampler's first draw from the generator, exactly
    (_, guided), _ = _logits(StandIn(), tokens, known, N_IMAGE, "image", 3.0, top_p=0.7)
    for temp in (0.25, 2.0):
        g = _draw_gumbel((2, N_AUDIO, K_AUD), _gen(4), torch.device("cpu"))
        want = (torch.log_softmax(guided / temp, -1) + g).argmax(-1)
        _, got = sample(StandIn(), "image2audio", image_tokens=img, steps=1, cfg=3.0, top_p=0.7,
                        token_temperature=temp, generator=_gen(4))
        assert torch.equal(got, want)
    # a low temperature draws the guided argmax; 1 is the paper's sampler, bit for bit
    _, cold = sample(StandIn(), "image2audio", image_tokens=img, steps=1, cfg=3.0, top_p=0.7,
                     token_temperature=1e-4, generator=_gen(4))
    assert torch.equal(cold, guided.argmax(-1))
    _, plain = sample(StandIn(), "inpaint", image_tokens=img, audio_tokens=aud, steps=5, cfg=2.0,
                      audio_hole=seconds_to_audio_hole(3.0, 7.0), generator=_gen(6))
    _, one = sample(StandIn(), "inpaint", image_tokens=img, audio_tokens=aud, steps=5, cfg=2.0,
                    audio_hole=seconds_to_audio_hole(3.0, 7.0), token_temperature=1.0, generator=_gen(6))
    assert torch.equal(plain, one)
    # joint draws have no condition and keep temperature 1 (a "together" joint is unchanged); an
    # image-first joint's picture is too, its sound (image2audio given that picture) is sharpened
    together = sample(StandIn(), "joint", num_samples=2, steps=6, generator=_gen(7))
    together_cold = sample(StandIn(), "joint", num_samples=2, steps=6, token_temperature=0.1, generator=_gen(7))
    assert all(torch.equal(a, b) for a, b in zip(together, together_cold, strict=True))
    first = sample(StandIn(), "joint", num_samples=2, steps=6, joint_order="image-first", generator=_gen(8))
    first_cold = sample(StandIn(), "joint", num_samples=2, steps=6, joint_order="image-first",
                        token_temperature=0.1, generator=_gen(8))
    assert torch.equal(first[0], first_cold[0]) and not torch.equal(first[1], first_cold[1])
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="token_temperature"):
            sample(StandIn(), "image2audio", image_tokens=img, steps=2, token_temperature=bad)


def test_conditional_confidence_reveals_the_guided_draws_in_the_conditional_models_order() -> None:
    from avtok.model.sampler import _draw_gumbel, _logits

    img, aud = _tokens(2)
    tokens = torch.cat([img, aud], 1)
    known = torch.cat([torch.ones(2, N_IMAGE, dtype=torch.bool), torch.zeros(2, N_AUDIO, dtype=torch.bool)], 1)
    temp, cpu = 0.5, torch.device("cpu")
    (_, guided), (_, cond) = _logits(StandIn(), tokens, known, N_IMAGE, "image", 3.0, top_p=0.7)
    # step 0 of 2 by hand: the draw from the guided logits (the generator's first Gumbel draw), then the
    # confidence noise (its second), scaled by tau·(1 - r) at r = 1/2; the 187 = floor(265·cos(π/4)) least
    # confident stay masked
    g = _gen(0)  # the generator _run_recording gives the sampler
    draw = (torch.log_softmax(guided / temp, -1) + _draw_gumbel((2, N_AUDIO, K_AUD), g, cpu)).argmax(-1)
    noise = _draw_gumbel((2, N_IMAGE + N_AUDIO), g, cpu)[:, N_IMAGE:]
    revealed = {}
    for kind, scores in (("guided", guided), ("conditional", cond)):
        conf = torch.log_softmax(scores / temp, -1).gather(-1, draw.unsqueeze(-1)).squeeze(-1) + 4.5 * 0.5 * noise
        rank = torch.empty_like(draw)
        order = conf.argsort(dim=1, stable=True)
        rank.scatter_(1, order, torch.arange(N_AUDIO).expand_as(order))
        want = rank >= math.floor(N_AUDIO * math.cos(math.pi / 4))
        (_, out), trace = _run_recording(StandIn(), "image2audio", steps=2, image_tokens=img, cfg=3.0, top_p=0.7,
                                         token_temperature=temp, confidence=kind)
        assert torch.equal(trace[0][:, N_IMAGE:], want)
        revealed[kind] = want
    assert not torch.equal(revealed["guided"], revealed["conditional"])  # the orders differ; the draws do not
    # without guidance both orders are the same distribution's: bit for bit the default sampler
    for task, kw in (("audio2image", {"audio_tokens": aud}), ("image2audio", {"image_tokens": img})):
        a = sample(StandIn(), task, steps=4, cfg=0.0, generator=_gen(3), **kw)
        b = sample(StandIn(), task, steps=4, cfg=0.0, generator=_gen(3), confidence="conditional", **kw)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="confidence"):
        sample(StandIn(), "image2audio", image_tokens=img, steps=2, confidence="uncond")
