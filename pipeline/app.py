"""`avtok app`: a Gradio page for the four tasks of a trained checkpoint.

The work is done by `avtok.model.generate` (sampling, decoding) and `avtok.pipeline.media` (reading
the user's files the way extract reads videos); this module turns one request into pictures and
waveforms (`run_task`, no Gradio needed), makes example inputs from token shards (`make_examples`)
and lays out the page (`build_app`). Gradio is imported only inside `build_app`, so `import avtok`
never pulls it in (it is the optional extra `avtok[app]`).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from avtok.model.generate import Bundle, GenerateError, decode_images, decode_spec01, generate, side_by_side
from avtok.model.geometry import CLIP_SECONDS, EVAL_FRAME, SAMPLE_RATE

from .media import MediaError, load_audio_spec01, load_image, png_bytes, wav_bytes

MAX_SAMPLES = 4  # audio players on the page; the sample-count slider stops here
TASK_TITLES = {"image2audio": "Image → sound", "audio2image": "Sound → image", "joint": "Joint",
               "inpaint": "Inpaint sound"}


@dataclass
class Result:
    """What one request produced: one picture (per sample an image + mel row, or the images side by side)
    and the waveforms (float32, 22050 Hz)."""

    picture: np.ndarray
    waves: list[np.ndarray] = field(default_factory=list)
    message: str = ""


def run_task(bundle: Bundle, vocoder: Callable[[np.ndarray], Any] | None, task: str, *,
             image: str | os.PathLike | None = None, audio: str | os.PathLike | None = None,
             hole: tuple[float, float] | None = None, cfg: float = 3.0, steps: int = 30, seed: int = 0,
             num_samples: int = 1, progress: Callable[[int, int], None] | None = None) -> Result:
    """One request: read the inputs, sample, and return pictures and waveforms.

    Raises MediaError / GenerateError (ValueError) with a one-line message for anything the user can fix.
    """
    if task in ("image2audio", "inpaint") and not image:
        raise MediaError("upload an image first")
    if task in ("audio2image", "inpaint") and not audio:
        raise MediaError("upload a sound first")
    if not 1 <= int(num_samples) <= MAX_SAMPLES:
        raise GenerateError(f"number of samples must be 1 to {MAX_SAMPLES}")
    if not 1 <= int(steps) <= 1000:
        raise GenerateError("steps must be 1 to 1000")
    if task == "inpaint":
        if hole is None or None in hole:
            raise GenerateError("give the start and the end of the range to regenerate, in seconds")
        start, end = float(hole[0]), float(hole[1])
        if not 0.0 <= start < end <= CLIP_SECONDS:
            raise GenerateError(f"bad time range {start:g}-{end:g} s: need 0 <= start < end <= {CLIP_SECONDS:g}")
        hole = (start, end)
    # read only what the task uses (a hidden tab's leftover upload is not an input)
    img = load_image(image) if task in ("image2audio", "inpaint") else None
    mel = load_audio_spec01(audio) if task in ("audio2image", "inpaint") else None
    hole = hole if task == "inpaint" else None
    gen = generate(bundle, task, image=img, spec01=mel, hole=hole, num_samples=int(num_samples), seed=int(seed),
                   steps=int(steps), cfg=float(cfg), vocoder=vocoder if task != "audio2image" else None,
                   progress=progress, precision="auto")  # bf16 (fp16 before Ampere) autocast on CUDA, fp32 on CPU
    n = int(num_samples)
    if task == "audio2image":
        return Result(picture=stack([gen.images[i] for i in range(n)], axis=1), message=_summary(task, gen.meta, n))
    picture = stack([side_by_side(gen.images[i], gen.spec01[i]) for i in range(n)], axis=0)
    waves = [np.asarray(gen.waves[i], np.float32) for i in range(n)] if gen.waves is not None else []
    return Result(picture=picture, waves=waves, message=_summary(task, gen.meta, n))


def stack(pictures: list[np.ndarray], axis: int, gap: int = 8) -> np.ndarray:
    """Same-size uint8 pictures joined along `axis` (0: rows, 1: columns) with white gaps of `gap` pixels."""
    shape = list(pictures[0].shape)
    shape[axis] = gap
    white = np.full(shape, 255, np.uint8)
    parts = [p for pic in pictures for p in (white, pic)][1:]
    return np.concatenate(parts, axis=axis)


def _summary(task: str, meta: dict[str, Any], n: int) -> str:
    text = (f"{TASK_TITLES[task]}: {n} sample(s), {meta['steps']} steps, CFG {meta['cfg']:g}, seed {meta['seed']}"
            f" (checkpoint step {meta['step']})")
    if "hole_s" in meta:
        text += f"; regenerated {meta['hole_s'][0]:g}-{meta['hole_s'][1]:g} s"
    return text


@dataclass
class Example:
    """One example input made from a token shard's clip: its middle frame and its sound, decoded."""

    video_id: str
    label: str
    image: Path
    audio: Path


def make_examples(bundle: Bundle, vocoder: Callable[[np.ndarray], Any], shards: str | os.PathLike,
                  out: str | os.PathLike, count: int = 4) -> list[Example]:
    """Decode `count` clips of a token folder (one per label first) into png + wav files.

    The shards must come from the checkpoint's tokenizers (same fingerprints), else GenerateError.
    """
    from avtok.model.token_shards import load_tokens

    data = load_tokens(shards, split=None)
    for modality, tok in (("image", bundle.image_tokenizer), ("audio", bundle.audio_tokenizer)):
        want = data.index.get(f"{modality}_tokenizer", {}).get("fingerprint")
        if want != tok.fingerprint:
            raise GenerateError(f"{shards}: made with another {modality} tokenizer than the checkpoint's "
                                f"(fingerprint {str(want)[:12]} vs {tok.fingerprint[:12]})")
    picked = _pick_clips(data.labels, count)
    import torch

    img = decode_images(bundle, torch.from_numpy(data.image[picked, EVAL_FRAME].astype(np.int64)))
    mel = decode_spec01(bundle, torch.from_numpy(data.audio[picked].astype(np.int64)))
    waves = np.asarray(vocoder(mel), np.float32)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    examples = []
    for j, i in enumerate(picked):
        stem = f"{j}-{re.sub(r'[^A-Za-z0-9_-]', '_', data.video_ids[i])[:60]}"
        (out / f"{stem}.png").write_bytes(png_bytes(img[j]))
        (out / f"{stem}.wav").write_bytes(wav_bytes(waves[j]))
        examples.append(Example(data.video_ids[i], data.labels[i], out / f"{stem}.png", out / f"{stem}.wav"))
    return examples


def _pick_clips(labels: list[str], count: int) -> list[int]:
    """Row numbers of up to `count` clips, one per label first, in stored order."""
    first: dict[str, int] = {}
    for i, label in enumerate(labels):
        first.setdefault(label, i)
    chosen = set(first.values())
    return (sorted(chosen) + [i for i in range(len(labels)) if i not in chosen])[:count]


def _int16(wave: np.ndarray) -> np.ndarray:
    return np.round(np.clip(wave, -1.0, 1.0) * 32767).astype(np.int16)


def _handler(gr, bundle: Bundle, vocoder, task: str) -> Callable:
    """The Gradio event function for one task: every failure becomes a gr.Error message on the page."""

    def run(image, audio, start, end, cfg, steps, seed, num_samples, progress=gr.Progress()):
        def report(step: int, total: int) -> None:
            progress(step / total, desc=f"step {step}/{total}")

        try:
            res = run_task(bundle, vocoder, task, image=image, audio=audio, hole=(start, end), cfg=cfg, steps=steps,
                           seed=seed, num_samples=num_samples, progress=report)
        except (ValueError, OSError) as e:  # MediaError, GenerateError, unreadable files: the user can fix these
            msg = _one_line(e)
            for upload in (image, audio):  # name the user's file, not Gradio's cache copy of it
                if upload:
                    msg = msg.replace(str(upload), Path(upload).name)
            raise gr.Error(msg, print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - a bug: say so on the page, keep the traceback in the log
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(f"internal error ({type(e).__name__}: {_one_line(e)}); see the server log",
                           print_exception=False) from None
        players = [gr.update(value=(SAMPLE_RATE, _int16(res.waves[i])) if i < len(res.waves) else None,
                             visible=i < len(res.waves)) for i in range(MAX_SAMPLES)]
        return [res.message, res.picture, *players]

    run.__name__ = task
    return run


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def build_app(bundle: Bundle, vocoder: Callable[[np.ndarray], Any], examples: list[Example] | None = None):
    """The page: one tab per task, shared controls (CFG, steps, seed, samples); returns a gr.Blocks."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from a local tool
    import gradio as gr

    examples = examples or []
    with gr.Blocks(title="avtok", analytics_enabled=False) as demo:
        gr.Markdown(f"## avtok: sound from images, images from sound\n`{bundle.checkpoint}` (step {bundle.step}) "
                    f"on {bundle.device}")
        with gr.Row():
            cfg = gr.Slider(0.0, 10.0, value=3.0, step=0.5, label="CFG scale (0 = no guidance)", elem_id="cfg")
            steps = gr.Slider(1, 100, value=30, step=1, label="Steps T", elem_id="steps")
            seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
            num = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label="Samples", elem_id="samples")
        for task, title in TASK_TITLES.items():
            with gr.Tab(title, id=task):
                _task_tab(gr, bundle, vocoder, task, examples, (cfg, steps, seed, num))
    return demo


def _task_tab(gr, bundle: Bundle, vocoder, task: str, examples: list[Example], controls: tuple) -> None:
    """The inputs, button and outputs of one task's tab, wired to its handler (api name = the task)."""
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="filepath", sources=["upload"], label="Image", elem_id=f"{task}-image",
                             visible=task in ("image2audio", "inpaint"))
            audio = gr.Audio(type="filepath", sources=["upload"], label="Sound (first 10 s)", elem_id=f"{task}-sound",
                             visible=task in ("audio2image", "inpaint"))
            with gr.Row(visible=task == "inpaint"):
                start = gr.Number(value=3.0, label="Regenerate from (s)")
                end = gr.Number(value=6.0, label="to (s)")
            button = gr.Button("Generate", variant="primary", elem_id=f"{task}-generate")
            if examples and task != "joint":
                fields = {"image2audio": ("image",), "audio2image": ("audio",), "inpaint": ("image", "audio")}[task]
                gr.Examples([[str(getattr(e, f)) for f in fields] for e in examples],
                            inputs=[{"image": image, "audio": audio}[f] for f in fields],
                            label="Examples from the token shards",
                            example_labels=[e.label or e.video_id for e in examples])
        with gr.Column():
            status = gr.Markdown(elem_id=f"{task}-status")
            picture = gr.Image(label="Image + mel per sample" if task != "audio2image" else "Images",
                               type="numpy", format="png", interactive=False, elem_id=f"{task}-picture")
            # the browser's own player (a plain <audio>), not the waveform widget
            players = [gr.Audio(label=f"Sample {i}", type="numpy", format="wav", interactive=False,
                                waveform_options=gr.WaveformOptions(show_recording_waveform=False),
                                visible=task != "audio2image" and i == 0, elem_id=f"{task}-audio-{i}")
                       for i in range(MAX_SAMPLES)]
    button.click(_handler(gr, bundle, vocoder, task), inputs=[image, audio, start, end, *controls],
                 outputs=[status, picture, *players], api_name=task)


def examples_folder() -> Path:
    """A fresh folder for example files (under the system temp dir, which Gradio may serve); removed at exit."""
    import atexit
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="avtok-app-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
