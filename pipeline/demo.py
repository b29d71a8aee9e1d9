"""`avtok demo`: the whole chain on a synthetic set made on the spot, on CPU, in minutes.

Stages (each reused when a re-run finds it finished):

1. data      `synthetic.make_dataset`: 8 classes × 40 clips (35 train, 5 test), mp4 + manifest.csv
2. extract   `run_extract` on a local Ray, with --keep-audio (the test clips' real audio is the reference)
3. kmeans    patch k-means codebooks fit on the train clips only (frames k = 64, mels k = 32)
4. tokenize  token shards with those codebooks (`run_tokenize`, in this process)
5. train     the `tiny` transformer (`model.train.train`) with a demo budget: one encoder block on the
             visible tokens, one decoder block, mask ratios spread over [0, 1] (`DemoOptions.model_overrides`)
6. report    all four tasks on every test clip, scored by analytic oracles (`oracles.py`): image→audio,
             audio→image and inpainting 3-7 s at every guidance scale of the sweep, joint generation once;
             sound decoded with the tokenizer and Griffin-Lim; wavs, image + mel pngs, a loss curve and
             `metrics.json` (per-task accuracy with guidance on and off, the sweep, references)

The image used for generation is the middle frame (index 5) of each clip.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from avtok.model.files import read_json, sha256_file, write_json
from avtok.model.geometry import EVAL_FRAME, SAMPLE_RATE

from . import oracles as orc
from . import synthetic as syn

SWEEP_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0)
DIRECTED_TASKS = ("image2audio", "audio2image", "inpaint")
INPAINT_SPAN_S = (3.0, 7.0)  # the audio regenerated in the inpainting task


@dataclass
class DemoOptions:
    """Sizes and budgets of the demo (defaults: 2.5-5 minutes on 2 CPU cores by the machine, docs/method.md "The demo")."""

    out: str = "avtok_demo"
    clips_per_class: int = 40  # 35 train + 5 test
    test_per_class: int = 5
    image_codebook: int = 64  # k of the frame-patch k-means codebook
    audio_codebook: int = 32  # k of the mel-patch codebook
    # One encoder and one decoder block. The encoder sees only the visible tokens ("masked" drop rule, MAE),
    # in training and in sampling, and the decoder is 16 wide: a step costs 0.15-0.17 s instead of
    # 0.26-0.27 s, and audio→image is learned on every seed (docs/method.md, "The demo"); the paper's fixed
    # drop of half of each modality broke image→audio, since training then never showed a whole picture.
    # Mask ratios spread over [0, 1], and in half the samples one modality fully masked (full_mask_prob):
    # "image visible, audio all masked" is the image→audio task itself, which the paper's N(0.7, 0.25) on
    # [0.2, 1] shows in well under 1 % of samples. Position tables start as sine-cosine codes of (row,
    # column) (pos_init): from N(0, 0.02) a 1000-step model had not learned that one sound row is one
    # token row, left a tone row silent across an inpainting hole on one seed in five and drew pictures
    # with other classes' square edges on another (docs/method.md, "The demo")
    model_overrides: dict[str, Any] = field(default_factory=lambda: {
        "dim": 32, "dec_dim": 16, "heads": 1, "dec_heads": 1, "depth": 1, "dec_depth": 1, "drop_rule": "masked",
        "mask_min": 0.0, "mask_max": 1.0, "mask_mu": 0.6, "mask_std": 0.5, "full_mask_prob": 0.5,
        "pos_init": "sincos"})
    kmeans_iters: int = 10
    kmeans_points: int = 8192
    train_steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    sample_steps: int = 12
    # one Griffin-Lim iteration from the pseudo-inverse: the oracles read pitch band and beat, which the
    # first iteration already has (on a seed-0 checkpoint the same w = 0 and w = 1 scores as 3 iterations,
    # 11 s less report time)
    griffin_lim_iters: int = 1
    # Guidance as the paper (c + w·(c − u)) on a linear ramp; every draw, guided or not, kept to the
    # conditional's top-p nucleus: without it guidance promoted tokens the conditional model rules out
    # (inpainting seam clicks up to 84 dB, a broken beat at w ≥ 2), and unguided draws took a steady tone's
    # stray codes as dropouts. Joint generation decodes the picture first, then the sound given it: on one
    # schedule the first steps reveal picture and sound tokens of different classes at once
    # (docs/method.md, "The demo")
    cfg: float = 1.0
    cfg_schedule: str = "linear"
    top_p: float = 0.7
    # Draws given a condition from softmax(logits / 0.1): the k-means gives a steady tone one code per
    # loudness band and silence one code, so at 1 a tone row not sure of its rhythm drew dropouts (read as a
    # beat), and guidance sharpened toward silence (docs/method.md, "The demo")
    token_temperature: float = 0.1
    # Guided draws are revealed in the order of the conditional model's own certainty: guidance sharpens
    # (p_c^(1+w) / p_u^w), so ranked by the guided probability a draw that only guidance favours looked
    # sure and was committed early. On the five seeds' checkpoints, guided image→audio rose from a mean
    # of 0.965 to 0.985 and no guided score fell; unguided draws are unchanged (docs/method.md, "The demo")
    confidence: str = "conditional"
    joint_order: str = "image-first"
    choice_temperature: float = 4.5
    cfg_sweep: tuple[float, ...] = SWEEP_SCALES
    workers: int = 2
    seed: int = 0
    # torch threads; results are bit-identical run to run for one thread count. With one attention head
    # per block (model_overrides) a training step of 32 clips costs 0.15-0.17 s on 2 threads; narrower
    # heads are no faster (docs/method.md, "The demo", has the bench/train.py command): SDPA's CPU kernel is
    # slow for narrow heads
    threads: int | None = 2


def check_options(o: DemoOptions) -> None:
    """Raise ValueError when the options cannot make a demo (before any file is written)."""
    if o.clips_per_class <= o.test_per_class:
        raise ValueError(f"{o.clips_per_class} clips a class leave none to train on: the last {o.test_per_class} "
                         f"of each class are held out; use at least {o.test_per_class + 1}")


def quick_options(**changes: Any) -> DemoOptions:
    """The quick configuration (CI, under a minute on 2 cores): 8 clips a class (2 held out), 100
    steps, CFG scored at 0 and `cfg` only."""
    base = dict(clips_per_class=8, test_per_class=2, train_steps=100, cfg_sweep=())
    return DemoOptions(**{**base, **changes})


Say = Callable[[str], None]


def _stage(name: str, say: Say, timings: dict[str, float]):
    class _Timer:
        def __enter__(self):
            self.t0 = time.perf_counter()
            say(f"[demo] {name} ...")
            return self

        def __exit__(self, *exc):
            timings[name] = round(time.perf_counter() - self.t0, 2)
            if exc[0] is None:
                say(f"[demo] {name} done in {timings[name]:.1f} s")

    return _Timer()


# ----------------------------------------------------------------------------------------------- stages
def stage_data(out: Path, o: DemoOptions, say: Say) -> Path:
    return syn.make_dataset(out / "data", clips_per_class=o.clips_per_class, test_per_class=o.test_per_class,
                            seed=o.seed, workers=o.workers)


def stage_extract(manifest: Path, out: Path, o: DemoOptions, say: Say) -> Path:
    from .extract import run_extract

    dest = out / "extracted"
    # In this process, one shard after another, as tokenize: on the demo's 320 short clips Ray's start and
    # its workers' imports cost what two workers save (docs/method.md, "The demo": 23.6 s in process, 25.5 s
    # on Ray), so `workers` sets the clip makers only
    summary = run_extract(manifest, dest, shard_size=max(1, (o.clips_per_class * syn.NUM_CLASSES) // 4),
                          keep_audio=True, in_process=True)
    say(f"[demo] {summary.line()}")
    if summary.errors or summary.shards_failed:
        raise RuntimeError(f"extract reported {summary.errors} errors / {len(summary.shards_failed)} failed shards; "
                           f"see {dest / 'errors.parquet'}")
    return dest


def stage_kmeans(extracted: Path, out: Path, o: DemoOptions, say: Say) -> Path:
    """Both codebooks fit on frames and mels of the *train* clips only (the test clips stay unseen)."""
    import torch
    from avtok.model.tokenizers import frames_chw, mel_to_input, pixels_to_input
    from avtok.model.tokenizers.patch_kmeans import fit_codebook, save_patch_kmeans

    from .extracted import read_extracted_shard

    path = out / "kmeans.safetensors"
    if path.is_file():
        say(f"[demo] reusing {path}")
        return path
    frames, mels = [], []
    for tar in sorted(extracted.glob("shard-*.tar")):
        for s in read_extracted_shard(tar, decode_audio=False):
            if s.meta.get("split") == "train":
                frames.append(s.frames[::3])  # frames 0, 3, 6, 9: the picture barely changes within a clip
                mels.append(s.mel.astype(np.float32))
    with torch.no_grad():
        img = fit_codebook(frames_chw(np.concatenate(frames)), o.image_codebook, o.kmeans_iters,
                           o.kmeans_points, o.seed, to_input=pixels_to_input)
        aud = fit_codebook(mel_to_input(np.stack(mels)), o.audio_codebook, o.kmeans_iters, o.kmeans_points,
                           o.seed + 1)
    save_patch_kmeans(path, img, aud, {"image_k": o.image_codebook, "audio_k": o.audio_codebook,
                                       "iters": o.kmeans_iters, "max_points": o.kmeans_points, "seed": o.seed,
                                       "clips": len(mels), "split": "train"})
    return path


def stage_tokenize(extracted: Path, kmeans: Path, out: Path, o: DemoOptions, say: Say) -> Path:
    from .tokenize import run_tokenize

    dest = out / "tokens"
    # one CPU worker in this process: a second Ray start would cost more than it saves on 160 clips
    summary = run_tokenize(extracted, dest, image_tokenizer=kmeans, audio_tokenizer=kmeans,
                           image_kind="patch-kmeans", audio_kind="patch-kmeans", device="cpu", in_process=True)
    say(f"[demo] {summary.line()}")
    if summary.errors or summary.shards_failed:
        raise RuntimeError(f"tokenize reported {summary.errors} errors / {len(summary.shards_failed)} failed shards")
    return dest


def stage_train(tokens: Path, out: Path, o: DemoOptions, say: Say) -> tuple[Path, dict[str, Any]]:
    from avtok.model.checkpoint import load_checkpoint
    from avtok.model.train import TrainConfig, train

    run = out / "run"
    last = run / "last.pt"
    if last.exists():
        ckpt = load_checkpoint(last)
        if ckpt["step"] >= o.train_steps:
            say(f"[demo] reusing {last} (step {ckpt['step']})")
            return last, {"steps": ckpt["step"], "reused": True}
    cfg = TrainConfig(shards=str(tokens), out=str(run), preset="tiny", model_overrides=dict(o.model_overrides),
                      batch_size=o.batch_size, steps=o.train_steps,
                      lr=o.lr, warmup_steps=max(1, o.train_steps // 20), min_lr=o.lr * 0.05, eval_every=o.train_steps,
                      eval_samples=64, ckpt_every=max(50, o.train_steps // 4), keep_last=1, log_every=25,
                      seed=o.seed, device="cpu", resume=last.exists(), precision="fp32")
    summary = train(cfg, log=say).to_dict()
    for key in ("losses", "seconds", "samples_per_s", "checkpoint"):  # timings live in metrics["timings"]
        summary.pop(key, None)
    return last, summary


# ----------------------------------------------------------------------------------------------- report
def _test_clips(extracted: Path) -> dict[str, dict[str, Any]]:
    """video_id → {frame (uint8 256×256×3, index 5), audio (float32), label} of the extracted test clips."""
    from .extracted import decode_sample, iter_raw_samples

    clips = {}
    for tar in sorted(extracted.glob("shard-*.tar")):
        for key, members in iter_raw_samples(tar):
            if json.loads(members.get("json", b"{}")).get("split") != "test":
                continue  # only the held-out clips are decoded (the train clips are 7 in 8)
            s = decode_sample(key, members)
            clips[s.meta["video_id"]] = {"frame": s.frames[EVAL_FRAME], "audio": s.audio,
                                         "label": s.meta["label"], "mel": s.mel.astype(np.float32)}
    return clips


def fast_griffin_lim(n_iter: int) -> Callable[[Any], Any]:
    """spec01 [B, 80, T] → waveform [B, T·256] with the mel basis' pseudo-inverse (no NNLS refinement) and
    `n_iter` Griffin-Lim iterations: enough for the demo's tones; `avtok generate` has the careful inverse."""
    from avtok.model.vocoder import griffin_lim_vocoder

    return functools.partial(griffin_lim_vocoder, n_iter=n_iter, nnls_iters=0)


def _colormap(spec01: np.ndarray) -> np.ndarray:
    """spec01 [80, T] → RGB uint8 [80, T, 3], low bands at the bottom (a simple dark-blue→yellow ramp)."""
    x = np.clip(spec01[::-1], 0, 1)
    r = np.clip(1.5 * x - 0.2, 0, 1)
    g = np.clip(1.6 * x - 0.5, 0, 1) * 0.9 + 0.1 * x
    b = np.clip(0.6 - np.abs(x - 0.35) * 1.5, 0, 1) + 0.25 * (1 - x)
    return (np.stack([r, g, b], -1) * 255).astype(np.uint8)


def _panel(frame: np.ndarray, mels: list[tuple[str, np.ndarray]]) -> Any:
    """The clip's frame on the left, labelled mel spectrograms (each 128 px tall) on the right."""
    from PIL import Image, ImageDraw

    w_mel, h_mel = 848, 128
    canvas = Image.new("RGB", (256 + 8 + w_mel, max(256, len(mels) * (h_mel + 4))), (255, 255, 255))
    canvas.paste(Image.fromarray(frame), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (title, spec) in enumerate(mels):
        im = Image.fromarray(_colormap(spec)).resize((w_mel, h_mel), Image.NEAREST)
        y = i * (h_mel + 4)
        canvas.paste(im, (264, y))
        draw.text((268, y + 2), title, fill=(255, 255, 255))
    return canvas


def loss_curve_png(metrics_jsonl: Path, path: Path) -> None:
    """Training loss (and eval NLL points) against step, drawn with PIL."""
    from PIL import Image, ImageDraw

    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    pts = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    W, H, pad = 640, 360, 48
    img = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.rectangle([pad, pad // 2, W - pad // 2, H - pad], outline=(0, 0, 0))
    d.text((pad, 4), "training loss (masked-token CE) vs step", fill=(0, 0, 0))
    if len(pts) >= 2:
        xs, ys = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)
        lo, hi = float(ys.min()), float(ys.max())
        hi = hi if hi > lo else lo + 1

        def xy(x: float, y: float) -> tuple[float, float]:
            return (pad + (x - xs.min()) / max(1, xs.max() - xs.min()) * (W - 1.5 * pad),
                    H - pad - (y - lo) / (hi - lo) * (H - 1.5 * pad))

        d.line([xy(x, y) for x, y in zip(xs, ys, strict=True)], fill=(30, 90, 200), width=2)
        d.text((4, pad // 2), f"{hi:.2f}", fill=(0, 0, 0))
        d.text((4, H - pad - 10), f"{lo:.2f}", fill=(0, 0, 0))
        d.text((pad, H - pad + 6), f"step {int(xs.min())}", fill=(0, 0, 0))
        d.text((W - 110, H - pad + 6), f"step {int(xs.max())}", fill=(0, 0, 0))
    img.save(path)


@dataclass
class _EvalSet:
    """The held-out clips as the report uses them."""

    ids: list[str]
    labels: list[str]
    image: Any  # Long[N, 256], tokens of frame EVAL_FRAME
    audio: Any  # Long[N, 265]
    clips: dict[str, dict[str, Any]]


@dataclass
class _Decoders:
    """Tokens → pixels and tokens → sound, with the tokenizers the checkpoint was trained on."""

    image: Any
    audio: Any
    vocoder: Callable[[Any], Any]

    def frames(self, tokens: Any) -> np.ndarray:
        from avtok.model.tokenizers import output_to_frames

        return np.concatenate([output_to_frames(self.image.decode(tokens[lo:lo + 16].long()))
                               for lo in range(0, len(tokens), 16)])

    def sound(self, tokens: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        from avtok.model.evaluate import spec01_to_waves, tokens_to_spec01

        spec = tokens_to_spec01(self.audio, tokens)
        return spec, spec01_to_waves(self.vocoder, spec)


def _decoders(ckpt: dict[str, Any], o: DemoOptions) -> _Decoders:
    from avtok.model.evaluate import load_audio_tokenizer
    from avtok.model.tokenizers import load_tokenizer

    rec = ckpt["tokenizers"]["image"]
    return _Decoders(load_tokenizer(rec["path"], rec.get("kind", "patch-kmeans"), modality="image"),
                     load_audio_tokenizer(ckpt), fast_griffin_lim(o.griffin_lim_iters))


def _generate(model: Any, task: str, ev: _EvalSet, w: float, o: DemoOptions) -> tuple[Any, Any]:
    """One task's tokens for every held-out clip (joint: as many samples as clips), seeded by `o.seed`."""
    import torch
    from avtok.model.sampler import sample, seconds_to_audio_hole

    g = torch.Generator().manual_seed(o.seed)
    kw = dict(steps=o.sample_steps, cfg=w, cfg_schedule=o.cfg_schedule, choice_temperature=o.choice_temperature,
              generator=g, top_p=o.top_p, token_temperature=o.token_temperature, confidence=o.confidence)
    if task == "image2audio":
        return sample(model, task, image_tokens=ev.image, **kw)
    if task == "audio2image":
        return sample(model, task, audio_tokens=ev.audio, **kw)
    if task == "inpaint":
        return sample(model, task, image_tokens=ev.image, audio_tokens=ev.audio,
                      audio_hole=seconds_to_audio_hole(*INPAINT_SPAN_S), **kw)
    return sample(model, "joint", num_samples=len(ev.ids), joint_order=o.joint_order, **kw)


def _score(task: str, tokens: tuple[Any, Any], ev: _EvalSet, dec: _Decoders) -> tuple[dict[str, Any], Any]:
    """Oracle scores of one task's generations, and what was decoded (frames, or (spec, waves))."""
    from avtok.model.sampler import seconds_to_audio_hole

    if task == "audio2image":
        frames = dec.frames(tokens[0])
        return orc.image_oracle_scores(frames, ev.labels), frames
    spec, waves = dec.sound(tokens[1])
    if task == "image2audio":
        return syn.oracle_scores(waves, SAMPLE_RATE, ev.labels), (spec, waves)
    if task == "inpaint":
        seams = orc.hole_seams_s(seconds_to_audio_hole(*INPAINT_SPAN_S).numpy())
        return orc.inpaint_scores(waves, SAMPLE_RATE, ev.labels, INPAINT_SPAN_S, seams), (spec, waves)
    frames = dec.frames(tokens[0])
    return orc.joint_agreement(list(frames), waves, SAMPLE_RATE), (frames, spec, waves)


def _sweep_scales(o: DemoOptions) -> list[float]:
    return sorted({float(w) for w in o.cfg_sweep} | {0.0, float(o.cfg)})


def _run_tasks(model: Any, ev: _EvalSet, dec: _Decoders, o: DemoOptions, say: Say) -> tuple[dict, dict]:
    """Every directed task at every sweep scale, and joint once; returns (scores, decoded outputs
    at w = cfg and w = 0 for the report files)."""
    scores: dict[str, dict[float, dict[str, Any]]] = {}
    kept: dict[str, dict[str, Any]] = {}
    for task in DIRECTED_TASKS:
        scores[task] = {}
        for w in _sweep_scales(o):
            toks = _generate(model, task, ev, w, o)
            scores[task][w], decoded = _score(task, toks, ev, dec)
            for name, scale in (("cfg_on", o.cfg), ("cfg_off", 0.0)):
                if w == scale:
                    kept.setdefault(task, {})[name] = decoded
            say(f"[demo] {task} w = {w:g}: oracle accuracy {scores[task][w]['accuracy']:.3f}")
    scores["joint"] = {0.0: _score("joint", _generate(model, "joint", ev, 0.0, o), ev, dec)[0]}
    say(f"[demo] joint: agreement {scores['joint'][0.0]['agreement']:.3f}")
    return scores, kept


def _write_files(report: Path, ev: _EvalSet, kept: dict, scores: dict, o: DemoOptions) -> None:
    """wav/ (image→audio and inpainting, CFG on and off) and png/ (one panel per clip)."""
    import soundfile as sf
    from PIL import Image

    i2a, inp, a2i = kept["image2audio"], kept["inpaint"], kept["audio2image"]
    pred = {name: scores["image2audio"][w]["predictions"] for name, w in (("cfg_on", o.cfg), ("cfg_off", 0.0))}
    for i, vid in enumerate(ev.ids):
        for name in ("cfg_on", "cfg_off"):
            sf.write(report / "wav" / f"{vid}_{name}.wav", i2a[name][1][i], SAMPLE_RATE)
            sf.write(report / "wav" / f"{vid}_inpaint_{name}.wav", inp[name][1][i], SAMPLE_RATE)
        clip = ev.clips[vid]
        panel = _panel(clip["frame"], [
            (f"real mel ({ev.labels[i]})", clip["mel"]),
            (f"image->audio, cfg {o.cfg:g} -> oracle: {_name(pred['cfg_on'][i])}", i2a["cfg_on"][0][i]),
            (f"image->audio, no cfg -> oracle: {_name(pred['cfg_off'][i])}", i2a["cfg_off"][0][i]),
            (f"inpainted {INPAINT_SPAN_S[0]:g}-{INPAINT_SPAN_S[1]:g} s, cfg {o.cfg:g}", inp["cfg_on"][0][i]),
        ])
        panel.save(report / "png" / f"{vid}.png")
        gap = np.full((256, 8, 3), 255, np.uint8)  # audio→image: real frame | CFG on | CFG off
        Image.fromarray(np.concatenate([clip["frame"], gap, a2i["cfg_on"][i], gap, a2i["cfg_off"][i]], axis=1)).save(
            report / "png" / f"{vid}_audio2image.png")


def _name(k: int) -> str:
    return syn.CLASS_NAMES[k] if k >= 0 else "no class"


def _task_metrics(scores: dict, o: DemoOptions) -> dict[str, Any]:
    """`tasks`, `cfg_sweep` and `oracle` sections of metrics.json from the per-scale scores."""
    strip = ("predictions", "image_classes", "audio_classes")
    tasks: dict[str, Any] = {t: {"cfg_on": scores[t][o.cfg]["accuracy"], "cfg_off": scores[t][0.0]["accuracy"],
                                 "cfg": o.cfg} for t in DIRECTED_TASKS}
    tasks["joint"] = {"agreement": scores["joint"][0.0]["agreement"]}
    sweep = {t: {f"{w:g}": scores[t][w]["accuracy"] for w in _sweep_scales(o)} for t in DIRECTED_TASKS}
    detail = {t: {f"{w:g}": {k: v for k, v in s.items() if k not in strip} for w, s in scores[t].items()}
              for t in (*DIRECTED_TASKS, "joint")}
    return {"tasks": tasks, "cfg_sweep": sweep, "task_detail": detail}


def stage_report(extracted: Path, tokens: Path, ckpt_path: Path, out: Path, o: DemoOptions,
                 say: Say) -> dict[str, Any]:
    """Score all four tasks on the held-out clips; write wavs, pngs and the loss curve."""
    import torch
    from avtok.model.checkpoint import load_checkpoint, model_from_checkpoint
    from avtok.model.evaluate import token_metrics
    from avtok.model.token_shards import load_tokens

    report = out / "report"
    (report / "wav").mkdir(parents=True, exist_ok=True)
    (report / "png").mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt)
    data = load_tokens(tokens, split="test")
    ev = _EvalSet(list(data.video_ids), list(data.labels),
                  torch.from_numpy(data.image[:, EVAL_FRAME].astype(np.int64)),
                  torch.from_numpy(data.audio.astype(np.int64)), _test_clips(extracted))
    dec = _decoders(ckpt, o)
    scores, kept = _run_tasks(model, ev, dec, o, say)
    _, recon_waves = dec.sound(ev.audio)
    ref_waves = [ev.clips[v]["audio"] for v in ev.ids]
    oracle = {"cfg_on": scores["image2audio"][o.cfg], "cfg_off": scores["image2audio"][0.0],
              "reconstruction": syn.oracle_scores(recon_waves, SAMPLE_RATE, ev.labels),
              "reference": syn.oracle_scores(ref_waves, SAMPLE_RATE, ev.labels)}
    image_oracle = {"reconstruction": orc.image_oracle_scores(dec.frames(ev.image), ev.labels)["accuracy"],
                    "reference": orc.image_oracle_scores([ev.clips[v]["frame"] for v in ev.ids],
                                                         ev.labels)["accuracy"]}
    inpaint_ref = orc.inpaint_scores(recon_waves, SAMPLE_RATE, ev.labels, INPAINT_SPAN_S,
                                     orc.hole_seams_s(_hole_mask()))
    _write_files(report, ev, kept, scores, o)
    if (ckpt_path.parent / "metrics.jsonl").exists():
        loss_curve_png(ckpt_path.parent / "metrics.jsonl", report / "loss_curve.png")
    say("[demo] token metrics (NLL/accuracy, true vs masked vs shuffled condition)")
    tm = token_metrics(model, ev.image, ev.audio, batch=64, seed=o.seed, cfg_scales=(0.0, o.cfg))
    return {
        "checkpoint_sha256": sha256_file(ckpt_path), "step": ckpt["step"], "test_clips": len(ev.ids),
        "eval_frame": EVAL_FRAME, "cfg": o.cfg, "cfg_schedule": o.cfg_schedule,
        "choice_temperature": o.choice_temperature, "sample_steps": o.sample_steps, "vocoder": "griffin-lim",
        "oracle_accuracy": {k: v["accuracy"] for k, v in oracle.items()},
        "image_oracle_accuracy": image_oracle,
        "inpaint_on_reconstruction": {k: inpaint_ref[k] for k in ("class_accuracy", "click_free",
                                                                  "seam_click_db_max", "seam_click_db_median")},
        "chance": 1.0 / syn.NUM_CLASSES,
        "oracle": {k: {kk: vv for kk, vv in v.items() if kk != "predictions"} for k, v in oracle.items()},
        **_task_metrics(scores, o),
        "token_metrics": tm,
    }


def _hole_mask() -> np.ndarray:
    from avtok.model.sampler import seconds_to_audio_hole

    return seconds_to_audio_hole(*INPAINT_SPAN_S).numpy()


def summary_table(metrics: dict[str, Any]) -> str:
    """The table printed at the end of the demo: every task, CFG on and off."""
    t, acc, w = metrics["tasks"], metrics["oracle_accuracy"], metrics["cfg"]
    lines = [f"avtok demo: {metrics['test_clips']} held-out clips (8 classes, chance {metrics['chance']:.3f}), "
             f"model step {metrics['step']}, seed {metrics.get('seed', '?')}, {metrics.get('threads', '?')} threads",
             "", f"| task (oracle) | CFG on (w = {w:g}) | CFG off (w = 0) |", "|---|---|---|"]
    names = {"image2audio": "image→audio (sound class)", "audio2image": "audio→image (picture class)",
             "inpaint": "audio inpainting 3-7 s (span class, no click)"}
    lines += [f"| {names[k]} | {t[k]['cfg_on']:.3f} | {t[k]['cfg_off']:.3f} |" for k in DIRECTED_TASKS]
    lines.append(f"| joint (picture and sound agree) | {t['joint']['agreement']:.3f} | - |")
    lines += ["", f"references: sound of the tokenizer reconstruction {acc['reconstruction']:.3f}, real sound "
                  f"{acc['reference']:.3f}; picture of the reconstruction "
                  f"{metrics['image_oracle_accuracy']['reconstruction']:.3f}, real picture "
                  f"{metrics['image_oracle_accuracy']['reference']:.3f}"]
    if "cfg_sweep" in metrics:
        lines.append("CFG sweep (w: accuracy): " + "; ".join(
            f"{task} " + ", ".join(f"{k}: {v:.3f}" for k, v in sw.items()) for task, sw in metrics["cfg_sweep"].items()))
    i2a = metrics["token_metrics"]["image2audio"]["ratio_1"]
    lines += [f"audio-token NLL given the image: {i2a['true']['nll']:.3f} nats (masked image "
              f"{i2a['masked']['nll']:.3f}, shuffled {i2a['shuffled']['nll']:.3f}); token accuracy "
              f"{i2a['true']['accuracy']:.3f}"]
    if "timings" in metrics:
        lines.append("stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in metrics["timings"].items()))
    return "\n".join(lines)


def run_demo(o: DemoOptions | None = None, say: Say = print) -> dict[str, Any]:
    """Run (or finish) the demo in `o.out`; returns the metrics written to `out/report/metrics.json`."""
    o = o or DemoOptions()
    check_options(o)
    if o.threads:
        import torch

        torch.set_num_threads(o.threads)
    out = Path(o.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with _stage("data", say, timings):
        manifest = stage_data(out, o, say)
    with _stage("extract", say, timings):
        extracted = stage_extract(manifest, out, o, say)
    with _stage("kmeans", say, timings):
        kmeans = stage_kmeans(extracted, out, o, say)
    with _stage("tokenize", say, timings):
        tokens = stage_tokenize(extracted, kmeans, out, o, say)
    with _stage("train", say, timings):
        ckpt, train_summary = stage_train(tokens, out, o, say)
    metrics_path = out / "report" / "metrics.json"
    reuse = False
    if metrics_path.exists():
        old = read_json(metrics_path)
        reuse = old.get("checkpoint_sha256") == sha256_file(ckpt) and old.get("options") == _opts_record(o)
    with _stage("report", say, timings):
        if reuse:
            say(f"[demo] reusing {metrics_path}")
            metrics = read_json(metrics_path)
        else:
            metrics = stage_report(extracted, tokens, ckpt, out, o, say)
            metrics["train"] = train_summary
    metrics["options"] = _opts_record(o)
    metrics["seed"] = o.seed
    metrics["threads"] = o.threads
    now = {**timings, "total": round(time.perf_counter() - t0, 2)}
    if reuse:  # keep the timings of the run that made the report; note this one's beside them
        metrics["rerun_timings"] = now
    else:
        metrics["timings"] = now
    write_json(metrics_path, metrics)
    return metrics


def _opts_record(o: DemoOptions) -> dict[str, Any]:
    rec = asdict(o)
    rec.pop("out", None)
    rec.pop("threads", None)
    return json.loads(json.dumps(rec))
