"""MaskGIT-style iterative decoding with classifier-free guidance (docs/method.md, "Sampling").

One loop serves every task. Image and audio tokens are laid out as one sequence of 256 + 265
positions; each position is *known* (given, never changes) or a *target* (to be generated; it
becomes known once revealed). Per step t = 0..T-1:

1. logits for all target positions (codebook entries only), guided as c + w_t·(c - u), where u is
   the same input with the condition modality fully masked (cond and uncond in one 2B forward);
   with `top_p` < 1 the logits, guided or not, keep only the conditional's top-p nucleus, so guidance
   re-weights the tokens the conditional model finds plausible and never promotes one it rules out
   (docs/method.md, "Guidance");
2. every still-unknown target is sampled from softmax(logits / T_tok), T_tok = `token_temperature` for
   draws given a condition (1 = the paper's, no temperature) and 1 for unconditional ones (joint);
3. confidence = log p(sampled) + tau·(1 - r)·Gumbel, r = (t+1)/T, with p the distribution drawn from
   (`confidence="guided"`, the paper's) or the conditional one at the same temperature
   (`"conditional"`: guidance picks the token, the model's own certainty decides when it is revealed);
   known and revealed positions get +inf, so they are never re-masked;
4. mask_len = max(1, min(#unknown - 1, floor(N0·cos(pi/2·r)))) of the lowest-confidence unknowns
   stay masked, the rest are revealed (N0 = number of targets of that sample).

The last step's samples are returned (every target filled). Randomness comes only from the
generator passed in, and is consumed identically whatever the guidance scale, so w = 0 gives the
unguided sampler bit for bit (the uncond pass is skipped then).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .geometry import AUDIO_GRID, CLIP_SECONDS, TASKS, audio_column_edge_s

CFG_SCHEDULES = ("constant", "linear")
JOINT_ORDERS = ("together", "image-first")
CONFIDENCES = ("guided", "conditional")


def mask_ratio(r: float) -> float:
    """The cosine schedule: fraction of the N0 targets still masked after progress r in (0, 1]."""
    return math.cos(math.pi / 2 * r)


def guidance_scale(cfg: float, schedule: str, step: int, steps: int) -> float:
    """w at step t: constant, or a linear ramp w·(t+1)/T (early tokens nearly unguided, Muse §2.7)."""
    if schedule == "constant":
        return float(cfg)
    if schedule == "linear":
        return float(cfg) * (step + 1) / steps
    raise ValueError(f"unknown cfg schedule {schedule!r}; choose one of {CFG_SCHEDULES}")


def seconds_to_audio_hole(start_s: float, end_s: float) -> torch.Tensor:
    """The audio token positions (Bool[265], row-major over 5×53) to regenerate for a time range.

    A token column is hit when the hole overlaps the time its 16 mel frames stand for (each frame
    owns one hop around its centre; the first and last column also own the clip's edges); one
    extra column on each side is added because the border tokens also encode what is outside.
    """
    if not (math.isfinite(start_s) and math.isfinite(end_s)):
        raise ValueError("the hole's start and end must be finite numbers of seconds")
    start_s, end_s = max(0.0, float(start_s)), min(CLIP_SECONDS, float(end_s))
    if end_s <= start_s:
        raise ValueError(f"empty audio hole {start_s:g}-{end_s:g} s: the end must be after the start, within 0-10 s")
    n_cols = AUDIO_GRID[1]
    cols = torch.zeros(n_cols, dtype=torch.bool)
    for w in range(n_cols):
        lo = 0.0 if w == 0 else audio_column_edge_s(w)
        hi = CLIP_SECONDS if w == n_cols - 1 else audio_column_edge_s(w + 1)
        if min(hi, end_s) > max(lo, start_s):
            cols[w] = True
    hit = cols.nonzero().flatten()
    lo_col, hi_col = max(0, int(hit.min()) - 1), min(n_cols - 1, int(hit.max()) + 1)
    cols[lo_col : hi_col + 1] = True
    return cols.unsqueeze(0).expand(AUDIO_GRID[0], n_cols).reshape(-1).clone()


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _as_batch(x: torch.Tensor | None, n: int, name: str) -> torch.Tensor | None:
    if x is None:
        return None
    x = torch.as_tensor(x)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[1] != n:
        raise ValueError(f"{name} must have shape [B, {n}] (or [{n}]), got {tuple(x.shape)}")
    return x.long()


def _draw_gumbel(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    # Drawn where the generator lives (a CPU generator also works for a GPU model, more slowly);
    # clamped away from 0 and 1 so -log(-log u) stays finite.
    where = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=where, dtype=torch.float32).to(device)
    u = u.clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def _task_setup(
    task: str, image_tokens: torch.Tensor | None, audio_tokens: torch.Tensor | None,
    audio_hole: torch.Tensor | None, num_samples: int | None, n_img: int, n_aud: int, device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str | None]:
    """Check a task's inputs; return (image, audio, image target, audio target, condition modality).

    A target mask marks the positions to generate; the condition modality is what the unconditional
    pass masks out (None: nothing to guide by)."""
    img = _as_batch(image_tokens, n_img, "image_tokens")
    aud = _as_batch(audio_tokens, n_aud, "audio_tokens")

    if task == "image2audio":
        if img is None:
            raise ValueError("image2audio needs image_tokens")
        batch = img.shape[0]
    elif task == "audio2image":
        if aud is None:
            raise ValueError("audio2image needs audio_tokens")
        batch = aud.shape[0]
    elif task == "joint":
        batch = int(num_samples) if num_samples is not None else (
            img.shape[0] if img is not None else aud.shape[0] if aud is not None else 1)
    else:
        if aud is None or img is None or audio_hole is None:
            raise ValueError("inpaint needs audio_tokens, image_tokens (the guide) and audio_hole")
        batch = aud.shape[0]
    for name, x in (("image_tokens", img), ("audio_tokens", aud)):
        if x is not None and x.shape[0] != batch:
            raise ValueError(f"{name} has batch {x.shape[0]}, expected {batch}")

    img = img.to(device) if img is not None else torch.zeros(batch, n_img, dtype=torch.long, device=device)
    aud = aud.to(device) if aud is not None else torch.zeros(batch, n_aud, dtype=torch.long, device=device)
    ones_i = torch.ones(batch, n_img, dtype=torch.bool, device=device)
    ones_a = torch.ones(batch, n_aud, dtype=torch.bool, device=device)
    # target = positions to generate; cond_modality = what the uncond pass masks out
    if task == "image2audio":
        target_i, target_a, cond_modality = ~ones_i, ones_a, "image"
    elif task == "audio2image":
        target_i, target_a, cond_modality = ones_i, ~ones_a, "audio"
    elif task == "joint":
        target_i, target_a, cond_modality = ones_i, ones_a, None
    else:
        hole = torch.as_tensor(audio_hole, dtype=torch.bool, device=device)
        if hole.dim() == 1:
            hole = hole.unsqueeze(0).expand(batch, -1)
        if tuple(hole.shape) != (batch, n_aud):
            raise ValueError(f"audio_hole must have shape [{n_aud}] or [{batch}, {n_aud}], got {tuple(hole.shape)}")
        target_i, target_a, cond_modality = ~ones_i, hole.clone(), "image"

    return img, aud, target_i, target_a, cond_modality


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    task: str,
    image_tokens: torch.Tensor | None = None,
    audio_tokens: torch.Tensor | None = None,
    steps: int = 30,
    cfg: float = 3.0,
    cfg_schedule: str = "constant",
    choice_temperature: float = 4.5,
    generator: torch.Generator | None = None,
    audio_hole: torch.Tensor | None = None,
    num_samples: int | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    top_p: float = 1.0,
    joint_order: str = "together",
    token_temperature: float = 1.0,
    confidence: str = "guided",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate tokens with `model.forward_logits`; returns (image Long[B,256], audio Long[B,265]).

    task: "image2audio" (needs image_tokens), "audio2image" (needs audio_tokens), "joint" (needs
    num_samples, no guidance: there is no condition) or "inpaint" (needs audio_tokens, image_tokens
    and audio_hole, Bool[B,265] or [265]: the positions to regenerate, image-guided).
    cfg: w in c + w·(c - u); 0 turns guidance off. choice_temperature: tau of the Gumbel noise on
    the confidence. top_p: every draw, guided or not, is restricted to the conditional's top-p nucleus
    (1 = off, the paper's sampler). joint_order (joint only): "together" decodes all 521 tokens on one
    schedule (the paper); "image-first" decodes the picture on its own schedule with the sound masked, then
    the sound given it as image2audio (guided by `cfg`), each in `steps` steps (docs/method.md, "Sampling").
    token_temperature: the draws given a condition (image2audio, audio2image, inpaint, and the sound of an
    image-first joint) come from softmax(logits / token_temperature); 1 = the paper's sampler. Draws with
    no condition (a joint's picture, or all of a "together" joint) stay at 1: sharpened, most samples fall
    on one class (docs/method.md, "Sampling"). confidence: "guided" ranks the draws by their log p under the
    guided distribution (the paper), "conditional" under the conditional one (docs/method.md, "Guidance").
    generator: a seeded torch.Generator (on the model's device is fastest). callback(t, image_known,
    audio_known) sees the known masks after each step (progress, tests).
    """
    _check_settings(task, steps, top_p, token_temperature, joint_order, confidence)
    device = _model_device(model)
    n_img = model.cfg.image_tokens
    img, aud, target_i, target_a, cond_modality = _task_setup(
        task, image_tokens, audio_tokens, audio_hole, num_samples, n_img, model.cfg.audio_tokens, device)

    image_first = task == "joint" and joint_order == "image-first"
    tokens = torch.cat([img, aud], dim=1)  # [B, 521]
    target = torch.cat([target_i, target_a], dim=1)
    # hidden: masked in the model's input and never revealed (the sound while an image-first joint
    # decodes the picture)
    hidden = torch.zeros_like(target)
    if image_first:
        hidden[:, n_img:], target[:, n_img:] = True, False
    known = ~target & ~hidden  # given positions are known from the start; targets become known when revealed
    n0_cpu = target.sum(dim=1).cpu().double()  # per-sample N0
    guided = cond_modality is not None and cfg != 0
    tau = token_temperature if cond_modality is not None else 1.0
    # which modalities get logits and samples: fixed by the task, so the random draws (and GPU syncs)
    # do not depend on the state of the decoding
    wanted = (task in ("audio2image", "joint"),
              task in ("image2audio", "inpaint") or (task == "joint" and not image_first))

    sampled = tokens.clone()
    for t in range(steps):
        w = guidance_scale(cfg, cfg_schedule, t, steps) if guided else 0.0
        (logits_i, logits_a), cond = _logits(model, tokens, known, n_img, cond_modality if w != 0 else None, w,
                                             wanted, top_p)

        # 2-3: sample every position of the target modalities; known positions keep their id.
        # unguided, the conditional distribution is the one drawn from: no second log-softmax
        sampled, sel_logp = _draw(logits_i, logits_a, tokens, n_img, generator, device, tau,
                                  cond if confidence == "conditional" and w != 0 else None)
        unknown = ~known
        sampled = torch.where(unknown, sampled, tokens)

        # 4-8: keep the mask_len least confident unknowns masked, reveal the rest.
        r = (t + 1) / steps
        n_unknown = unknown.sum(dim=1)
        # in float64 on the CPU (MPS has no float64), as the reference computes it in Python
        mask_len = torch.floor(n0_cpu * mask_ratio(r)).long().to(device)
        mask_len = torch.clamp(torch.minimum(n_unknown - 1, mask_len), min=1)
        mask_len = torch.minimum(mask_len, n_unknown)  # a sample with nothing left to do stays as is
        noise = _draw_gumbel(tuple(tokens.shape), generator, device)
        conf = sel_logp + choice_temperature * (1.0 - r) * noise
        conf = torch.where(unknown, conf, torch.full_like(conf, math.inf))
        order = conf.argsort(dim=1, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.shape[1], device=device).expand_as(order))
        still_masked = rank < mask_len.unsqueeze(1)
        known = ~still_masked & ~hidden
        tokens = torch.where(still_masked, tokens, sampled)
        if callback is not None:
            callback(t, known[:, :n_img], known[:, n_img:])

    if image_first:
        return sample(model, "image2audio", image_tokens=sampled[:, :n_img], steps=steps, cfg=cfg,
                      cfg_schedule=cfg_schedule, choice_temperature=choice_temperature, generator=generator,
                      callback=callback, top_p=top_p, token_temperature=token_temperature, confidence=confidence)
    return sampled[:, :n_img], sampled[:, n_img:]


def _check_settings(task: str, steps: int, top_p: float, token_temperature: float, joint_order: str,
                    confidence: str) -> None:
    """Refuse a sampler setting that has no meaning, before any forward pass."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not (math.isfinite(token_temperature) and token_temperature > 0):
        raise ValueError(f"token_temperature must be a finite number above 0, got {token_temperature}")
    if joint_order not in JOINT_ORDERS:
        raise ValueError(f"unknown joint_order {joint_order!r}; choose one of {JOINT_ORDERS}")
    if confidence not in CONFIDENCES:
        raise ValueError(f"unknown confidence {confidence!r}; choose one of {CONFIDENCES}")


def _draw(logits_i: torch.Tensor | None, logits_a: torch.Tensor | None, tokens: torch.Tensor, n_img: int,
          generator: torch.Generator | None, device: torch.device,
          temperature: float = 1.0,
          scores: tuple[torch.Tensor | None, torch.Tensor | None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw per position of the modalities that have logits (image first, then audio), from
    softmax(logits / temperature): (tokens with the draws in place, log p of each draw under that
    distribution, or under softmax(scores / temperature) when `scores` are given: the confidence; +inf
    where nothing was drawn)."""
    sel_logp = torch.full(tokens.shape, math.inf, device=device)
    sampled = tokens.clone()
    for j, (logits, lo, hi) in enumerate(((logits_i, 0, n_img), (logits_a, n_img, tokens.shape[1]))):
        if logits is None:
            continue
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        # Gumbel-max draws exactly from softmax(logits / temperature).
        draw = (logp + _draw_gumbel(tuple(logp.shape), generator, device)).argmax(dim=-1)
        if scores is not None:
            logp = torch.log_softmax(scores[j].float() / temperature, dim=-1)
        sel_logp[:, lo:hi] = logp.gather(-1, draw.unsqueeze(-1)).squeeze(-1)
        sampled[:, lo:hi] = draw
    return sampled, sel_logp


def _logits(
    model: torch.nn.Module, tokens: torch.Tensor, known: torch.Tensor, n_img: int, uncond_modality: str | None,
    w: float,
    wanted: tuple[bool, bool] = (True, True),
    top_p: float = 1.0,
) -> tuple[tuple[torch.Tensor | None, torch.Tensor | None], tuple[torch.Tensor | None, torch.Tensor | None]]:
    """(guided logits c + w·(c - u), conditional logits c) for the wanted modalities (image, audio), both
    limited to the top-p nucleus of c when top_p < 1; None for the others. Without an uncond modality
    both are c."""
    img, aud = tokens[:, :n_img], tokens[:, n_img:]
    k_img, k_aud = known[:, :n_img], known[:, n_img:]
    if uncond_modality is None:
        c_i, c_a = model.forward_logits(img, aud, k_img, k_aud)
        plain = (_keep_nucleus(c_i, _nucleus_or_all(c_i, top_p)) if wanted[0] else None,
                 _keep_nucleus(c_a, _nucleus_or_all(c_a, top_p)) if wanted[1] else None)
        return plain, plain
    u_k_img = torch.zeros_like(k_img) if uncond_modality == "image" else k_img
    u_k_aud = torch.zeros_like(k_aud) if uncond_modality == "audio" else k_aud
    both_i, both_a = model.forward_logits(
        torch.cat([img, img]), torch.cat([aud, aud]), torch.cat([k_img, u_k_img]), torch.cat([k_aud, u_k_aud])
    )
    b = tokens.shape[0]
    out: list[torch.Tensor | None] = []
    conds: list[torch.Tensor | None] = []
    for both, want in zip((both_i, both_a), wanted, strict=True):
        if not want:
            out.append(None)
            conds.append(None)
            continue
        c, u = both[:b].float(), both[b:].float()
        keep = _nucleus_or_all(c, top_p)  # once for both: the sort is the dearest part of a sampler step
        out.append(_keep_nucleus(c + w * (c - u), keep))
        conds.append(_keep_nucleus(c, keep))
    return (out[0], out[1]), (conds[0], conds[1])


def _nucleus_or_all(cond: torch.Tensor, top_p: float) -> torch.Tensor | None:
    """The top-p nucleus mask of `cond`, or None for top_p = 1 (every token)."""
    return None if top_p >= 1.0 else nucleus(cond, top_p)


def _keep_nucleus(logits: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """`logits` with every token outside `keep` set to -inf (unchanged for None)."""
    return logits if keep is None else logits.masked_fill(~keep, -math.inf)


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Bool mask of the smallest set of tokens (per position) whose probability under softmax(logits)
    reaches `top_p`; the most likely token is always in it."""
    probs = logits.softmax(dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of the more likely tokens
    keep_sorted = before < top_p
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
