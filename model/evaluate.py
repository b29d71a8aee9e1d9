"""`avtok eval`: token-level metrics of a checkpoint on a token split, and waveform metrics when possible.

Image tokens come from the **middle frame, index 5** of the 10 stored per clip (`EVAL_FRAME`).

1. Masked-token NLL (nats/token) and accuracy of the target modality, both directions
   (image→audio, audio→image), at mask ratio 1.0 (pure generation) and 0.5, with the condition
   *true*, *masked* (all [MASK]: unconditional) and *shuffled* (another clip's condition; a fixed
   derangement). `delta_nll_uncond` = NLL(masked) − NLL(true) > 0 means the model uses the condition.
   At ratio 1.0 also the guided cross-entropy of the true tokens, logits u + (1+w)(c − u) = c + w(c − u).
2. CFG sweep with the MaskGIT sampler (w ∈ {0, 1, 2, 3, 5}, several seeds): generated-token accuracy
   against the ground truth, diversity (mean pairwise Hamming distance between seeds, as a fraction of
   positions) and codebook-usage entropy (bits) of the generated tokens.
3. Waveforms (image→audio at `cfg`, seed 0), decoded with the checkpoint's audio tokenizer and a vocoder
   (Griffin-Lim unless a MelGAN file is given). Reference audio: the clips' own audio (`extracted/`
   written with --keep-audio) if given, else the tokenizer's reconstruction of the true tokens (stated
   in the output). With the user's Cnn14 / VGGish files: audioldm_eval-compatible `frechet_distance`,
   `inception_score`, `kl_softmax`/`kl_sigmoid` (Cnn14) and `frechet_audio_distance` (VGGish), each with
   the file's sha256. Without them only `proxy_*` numbers (never called FD/FAD). An optional oracle
   (a waveform classifier, e.g. the synthetic set's) gives class accuracy of generated audio.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import metrics as M
from .checkpoint import load_checkpoint, model_from_checkpoint, tokenizer_mismatch
from .files import atomic_write_bytes, sha256_file
from .geometry import EVAL_FRAME, SAMPLE_RATE
from .token_scores import CFG_SCALES, token_metrics
from .token_shards import load_tokens

WAV_INDEX = "index.csv"
# (waves, sample_rate, labels) -> {"accuracy": ..., ...}; e.g. the synthetic set's analytic oracle
Oracle = Callable[[list[np.ndarray], int, list[str]], dict[str, Any]]


@dataclass
class EvalOptions:
    """Knobs of one evaluation run (the CLI's flags)."""

    split: str = "test"
    limit: int | None = None  # first N clips of the split
    batch: int = 32
    cfg_scales: tuple[float, ...] = CFG_SCALES
    seeds: int = 3
    steps: int = 30
    choice_temperature: float = 4.5
    sweep_directions: tuple[str, ...] = ("image2audio",)
    waveforms: bool = True
    cfg: float = 3.0  # guidance of the waveform set
    vocoder: str | None = None  # MelGAN file; None = Griffin-Lim
    audio_tokenizer: str | None = None  # override the path recorded in the checkpoint
    # video ids -> their own 22050 Hz audio (the caller reads extracted shards); None = tokenizer reconstruction
    reference_audio: Callable[[list[str]], dict[str, np.ndarray]] | None = None
    cnn14_ckpt: str | None = None
    vggish_ckpt: str | None = None
    device: str = "cpu"
    seed: int = 0
    oracle: Oracle | None = None
    wav_dir: str | None = None  # write generated wavs here
    progress: Callable[[str], None] | None = None


@torch.no_grad()
def cfg_sweep(model, image: torch.Tensor, audio: torch.Tensor, direction: str = "image2audio",
              cfg_scales: tuple[float, ...] = CFG_SCALES, seeds: int = 3, steps: int = 30, batch: int = 32,
              choice_temperature: float = 4.5, codebook: int | None = None) -> list[dict[str, Any]]:
    """Generated-token accuracy and diversity per guidance scale (MaskGIT sampler, seeds 0..seeds-1)."""
    from .sampler import sample

    device = next(model.parameters()).device
    truth = audio if direction == "image2audio" else image
    rows = []
    for w in cfg_scales:
        gens = []
        for s in range(seeds):
            g = torch.Generator(device=device).manual_seed(s)
            parts = []
            for lo in range(0, image.shape[0], batch):
                kw = ({"image_tokens": image[lo:lo + batch].to(device)} if direction == "image2audio"
                      else {"audio_tokens": audio[lo:lo + batch].to(device)})
                gi, ga = sample(model, direction, steps=steps, cfg=w, choice_temperature=choice_temperature,
                                generator=g, **kw)
                parts.append((ga if direction == "image2audio" else gi).cpu())
            gens.append(torch.cat(parts))
        acc = float(np.mean([(gen == truth).float().mean().item() for gen in gens]))
        ham = [float((a != b).float().mean()) for a, b in itertools.combinations(gens, 2)]
        all_tokens = torch.cat(gens).reshape(-1).numpy()
        size = codebook or int(all_tokens.max()) + 1
        rows.append({"cfg": w, "token_accuracy": acc,
                     "pairwise_hamming": float(np.mean(ham)) if ham else None,
                     "codebook_entropy_bits": M.entropy_bits(np.bincount(all_tokens, minlength=size)),
                     "codes_used": int((np.bincount(all_tokens, minlength=size) > 0).sum())})
    return rows


# ------------------------------------------------------------------------------------------- waveforms
def load_audio_tokenizer(ckpt: dict[str, Any], override: str | None = None):
    """The checkpoint's audio tokenizer (path from its record unless overridden; fingerprint checked)."""
    from .generate import load_recorded_tokenizer

    return load_recorded_tokenizer((ckpt.get("tokenizers") or {}).get("audio") or {}, "audio", override)


@torch.no_grad()
def tokens_to_spec01(tokenizer, tokens: torch.Tensor, batch: int = 16) -> np.ndarray:
    """Audio tokens [N, 265] → spec01 [N, 80, 848] via the tokenizer's decoder."""
    from .tokenizers import output_to_spec01

    out = [output_to_spec01(tokenizer.decode(tokens[lo:lo + batch].long())) for lo in range(0, len(tokens), batch)]
    return np.concatenate(out)


def spec01_to_waves(vocoder, spec01: np.ndarray, batch: int = 8) -> list[np.ndarray]:
    waves = []
    for lo in range(0, len(spec01), batch):
        w = vocoder(torch.from_numpy(np.ascontiguousarray(spec01[lo:lo + batch])))
        waves += [x.numpy().astype(np.float32) for x in w]
    return waves


def melband_stats(spec01: np.ndarray, bands: int = 16) -> np.ndarray:
    """Per clip: mean and std over time of `bands` pooled mel bands: [N, 2·bands] (proxy features)."""
    n, m, t = spec01.shape
    pooled = spec01.reshape(n, bands, m // bands, t).mean(axis=2)
    return np.concatenate([pooled.mean(axis=2), pooled.std(axis=2)], axis=1)


def proxy_metrics(gen_spec01: np.ndarray, ref_spec01: np.ndarray) -> dict[str, Any]:
    """Distribution/pairing proxies that need no external network (named proxy_*, not FD/FAD)."""
    out: dict[str, Any] = {"proxy_l1_spec01": float(np.abs(gen_spec01 - ref_spec01).mean())}
    if len(gen_spec01) >= 2:
        out["proxy_frechet_melband_stats"] = M.frechet_distance_features(melband_stats(gen_spec01),
                                                                         melband_stats(ref_spec01))
    return out


def waveform_metrics(gen: list[np.ndarray], ref: list[np.ndarray], names: list[str], sr: int,
                     cnn14_ckpt: str | None = None, vggish_ckpt: str | None = None) -> dict[str, Any]:
    """audioldm_eval-compatible metrics for the networks whose files are given (sha256 recorded)."""
    from . import audio_nets as AN

    out: dict[str, Any] = {}
    if cnn14_ckpt:
        net = AN.load_cnn14(cnn14_ckpt)
        g, r = AN.cnn14_outputs(net, gen, sr), AN.cnn14_outputs(net, ref, sr)
        is_mean, is_std = M.inception_score(g["logits"], splits=min(10, len(gen)))
        pairs = M.paired_by_name(names, names)
        kl = M.kl_divergence(r["logits"], g["logits"]) if pairs else {"kl_softmax": -1, "kl_sigmoid": -1}
        out["cnn14"] = {"file": str(cnn14_ckpt), "sha256": sha256_file(cnn14_ckpt), "sample_rate": net.sample_rate,
                        "frechet_distance": M.frechet_distance_features(g["2048"], r["2048"]),
                        "inception_score_mean": is_mean, "inception_score_std": is_std, **kl}
    if vggish_ckpt:
        net = AN.load_vggish(vggish_ckpt)
        out["vggish"] = {"file": str(vggish_ckpt), "sha256": sha256_file(vggish_ckpt),
                         "frechet_audio_distance": M.frechet_distance_features(AN.vggish_embeddings(net, gen, sr),
                                                                               AN.vggish_embeddings(net, ref, sr))}
    return out


def evaluate(checkpoint: str | os.PathLike, shards: str | os.PathLike, opts: EvalOptions | None = None) -> dict[str, Any]:
    """Run every metric the inputs allow; returns the JSON-able result (see module docstring)."""

    opts = opts or EvalOptions()
    say = opts.progress or (lambda _msg: None)
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).to(opts.device)
    data = load_tokens(shards, split=opts.split)
    why = tokenizer_mismatch(ckpt, data.index)
    if why:
        raise ValueError(f"{shards}: {why}; score shards made by the tokenizers the checkpoint was trained on")
    n = len(data) if opts.limit is None else min(opts.limit, len(data))
    image = torch.from_numpy(data.image[:n, EVAL_FRAME].astype(np.int64))
    audio = torch.from_numpy(data.audio[:n].astype(np.int64))
    labels = data.labels[:n]
    ids = data.video_ids[:n]
    if opts.wav_dir and opts.waveforms:
        check_wav_dir(opts.wav_dir, ids)
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "step": ckpt.get("step"), "shards": str(shards), "split": opts.split,
        "clips": n, "eval_frame": EVAL_FRAME, "steps": opts.steps, "seeds": opts.seeds,
        "choice_temperature": opts.choice_temperature,
    }
    say(f"token metrics on {n} clips")
    result["token_metrics"] = token_metrics(model, image, audio, batch=opts.batch, seed=opts.seed,
                                            cfg_scales=opts.cfg_scales)
    result["cfg_sweep"] = {}
    for direction in opts.sweep_directions:
        say(f"CFG sweep {direction} (w = {', '.join(f'{w:g}' for w in opts.cfg_scales)})")
        cb = model.cfg.audio_codebook if direction == "image2audio" else model.cfg.image_codebook
        result["cfg_sweep"][direction] = cfg_sweep(
            model, image, audio, direction, opts.cfg_scales, opts.seeds, opts.steps, opts.batch,
            opts.choice_temperature, codebook=cb)
    if opts.waveforms:
        result["waveforms"] = _waveform_section(ckpt, model, image, audio, ids, labels, opts, say)
    return result


def _waveform_section(ckpt, model, image, audio, ids, labels, opts: EvalOptions, say) -> dict[str, Any]:
    from .sampler import sample
    from .vocoder import load_vocoder

    tok = load_audio_tokenizer(ckpt, opts.audio_tokenizer)
    vocoder = load_vocoder(opts.vocoder)
    say(f"generating {len(ids)} waveforms (cfg {opts.cfg:g}, {'MelGAN' if opts.vocoder else 'Griffin-Lim'})")
    g = torch.Generator(device=opts.device).manual_seed(opts.seed)
    gen_tokens = torch.cat([sample(model, "image2audio", image_tokens=image[lo:lo + opts.batch].to(opts.device),
                                   steps=opts.steps, cfg=opts.cfg, choice_temperature=opts.choice_temperature,
                                   generator=g)[1].cpu()
                            for lo in range(0, len(ids), opts.batch)])
    gen_spec = tokens_to_spec01(tok, gen_tokens)
    rec_spec = tokens_to_spec01(tok, audio)
    gen_waves = spec01_to_waves(vocoder, gen_spec)
    out: dict[str, Any] = {"cfg": opts.cfg, "vocoder": opts.vocoder or "griffin-lim",
                           "audio_tokenizer": tok.record() if hasattr(tok, "record") else tok.path}
    ref_waves: list[np.ndarray]
    if opts.reference_audio is not None:
        found = opts.reference_audio(ids)
        missing = [v for v in ids if v not in found]
        if missing:
            raise ValueError(f"no reference audio.flac for {len(missing)} clips (e.g. {missing[0]}); "
                             "extract with --keep-audio")
        ref_waves = [found[v] for v in ids]
        out["reference"] = "clip audio (extracted --keep-audio)"
    else:
        ref_waves = spec01_to_waves(vocoder, rec_spec)
        out["reference"] = "tokenizer reconstruction of the true tokens, through the same vocoder"
    out.update(proxy_metrics(gen_spec, rec_spec))
    out.update(waveform_metrics(gen_waves, ref_waves, ids, SAMPLE_RATE, opts.cnn14_ckpt, opts.vggish_ckpt))
    if opts.oracle is not None:
        out["oracle"] = {"generated": opts.oracle(gen_waves, SAMPLE_RATE, labels),
                         "reference": opts.oracle(ref_waves, SAMPLE_RATE, labels)}
    if opts.wav_dir:
        write_wavs(opts.wav_dir, ids, gen_waves)
    return out


def wav_names(video_ids: list[str]) -> list[str]:
    """A safe, unique file name per clip: its position and the id with anything but [A-Za-z0-9._-] replaced.

    Never a path: ids such as `../../x`, `/abs/x` or `nested/dir/clip` all become plain names inside
    the folder; `index.csv` beside them maps each name back to its video id.
    """
    return [f"{clip_stem(i, vid)}.wav" for i, vid in enumerate(video_ids)]


def clip_stem(i: int, video_id: str) -> str:
    """`NNNNN_<id>` with anything but [A-Za-z0-9._-] in the id replaced: a plain, unique file-name stem."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id).strip("._")[:80] or "clip"
    return f"{i:05d}_{slug}"


def check_wav_dir(wav_dir: str | os.PathLike, video_ids: list[str]) -> None:
    """Refuse (ValueError) a --wav-dir holding files this run would write (never overwrite a user's file)."""
    folder = Path(wav_dir)
    taken = [n for n in [*wav_names(video_ids), WAV_INDEX] if (folder / n).exists()]
    if taken:
        raise ValueError(f"{folder / taken[0]} exists ({len(taken)} of the files to write do); "
                         "choose an empty --wav-dir")


def write_wavs(wav_dir: str | os.PathLike, video_ids: list[str], waves: list[np.ndarray]) -> None:
    """The generated waves as `wav_dir/NNNNN_<id>.wav` plus `index.csv` (file, video_id)."""
    import soundfile as sf

    folder = Path(wav_dir)
    folder.mkdir(parents=True, exist_ok=True)
    check_wav_dir(folder, video_ids)
    names = wav_names(video_ids)
    for name, w in zip(names, waves, strict=True):
        sf.write(folder / name, w, SAMPLE_RATE)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["file", "video_id"])
    writer.writerows(zip(names, video_ids, strict=True))
    atomic_write_bytes(folder / WAV_INDEX, rows.getvalue().encode("utf-8"))


def markdown_table(result: dict[str, Any]) -> str:
    """A short human-readable summary of `evaluate`'s result."""
    lines = [f"# avtok eval: {result['checkpoint']} (step {result.get('step')}), split {result['split']}, "
             f"{result['clips']} clips, frame {result['eval_frame']}", "",
             "| direction | mask ratio | NLL true | NLL masked | NLL shuffled | acc true | acc masked | ΔNLL |",
             "|---|---|---|---|---|---|---|---|"]
    for direction, res in result["token_metrics"].items():
        for ratio, r in res.items():
            lines.append(f"| {direction} | {ratio.split('_')[1]} | {r['true']['nll']:.3f} | {r['masked']['nll']:.3f} | "
                         f"{r['shuffled']['nll']:.3f} | {r['true']['accuracy']:.3f} | {r['masked']['accuracy']:.3f} | "
                         f"{r['delta_nll_uncond']:+.3f} |")
    for direction, rows in result.get("cfg_sweep", {}).items():
        lines += ["", f"CFG sweep, {direction}:", "",
                  "| w | token acc | pairwise Hamming | codebook entropy (bits) | codes used |", "|---|---|---|---|---|"]
        for r in rows:
            ham = "–" if r["pairwise_hamming"] is None else f"{r['pairwise_hamming']:.3f}"
            lines.append(f"| {r['cfg']:g} | {r['token_accuracy']:.3f} | {ham} | {r['codebook_entropy_bits']:.2f} | "
                         f"{r['codes_used']} |")
    wf = result.get("waveforms")
    if wf:
        lines += ["", f"Waveforms (cfg {wf['cfg']:g}, {wf['vocoder']}; reference: {wf['reference']}):", ""]
        for k in sorted(wf):
            if k.startswith("proxy_"):
                lines.append(f"- {k}: {wf[k]:.4f}")
        for net in ("cnn14", "vggish"):
            if net in wf:
                vals = ", ".join(f"{k} {v:.4f}" for k, v in wf[net].items() if isinstance(v, float))
                lines.append(f"- {net} ({Path(wf[net]['file']).name}, sha256 {wf[net]['sha256'][:12]}…): {vals}")
        if "oracle" in wf:
            lines.append(f"- oracle accuracy: generated {wf['oracle']['generated']['accuracy']:.3f}, "
                         f"reference {wf['oracle']['reference']['accuracy']:.3f}")
    return "\n".join(lines) + "\n"
