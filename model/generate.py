"""Generation from arrays: checkpoint + its tokenizers -> sampler -> decoded image / spec01 / waveform.

Reading and writing files is the caller's job (the layer above); this
module takes model-ready arrays (uint8 [256,256,3] images, spec01 [80,848] mels) and returns arrays.

The checkpoint records the tokenizers that made its training shards (`ckpt["tokenizers"]`); they
are loaded from the recorded paths unless the caller names other files, and a file whose weights
fingerprint differs from the record is refused (the tokens would mean something else).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from .geometry import AUDIO_GRID, TASKS
from .precision import DeviceError, autocast, resolve_device, resolve_precision
from .sampler import sample, seconds_to_audio_hole
from .tokenizers import frames_to_input, load_tokenizer, mel_to_input, output_to_frames, output_to_spec01


class GenerateError(ValueError):
    """Inputs that cannot be generated from (tokenizer mismatch, missing files); one-line message."""


@dataclass
class Bundle:
    """A model ready to sample, with the two tokenizers its tokens came from."""

    model: torch.nn.Module
    image_tokenizer: Any
    audio_tokenizer: Any
    device: torch.device
    checkpoint: str
    step: int


@dataclass
class Generation:
    """What one call produced: N samples of each modality (inputs included, unchanged)."""

    task: str
    images: np.ndarray  # uint8 [N, 256, 256, 3]
    spec01: np.ndarray  # float32 [N, 80, 848]
    waves: np.ndarray | None  # float32 [N, 848·256] at 22050 Hz, when audio was generated
    image_tokens: torch.Tensor  # Long [N, 256]
    audio_tokens: torch.Tensor  # Long [N, 265]
    meta: dict[str, Any] = field(default_factory=dict)


def parse_time_range(text: str) -> tuple[float, float]:
    """'3.0-6.0' -> (3.0, 6.0): the audio hole in seconds of the 10 s clip."""
    parts = text.strip().split("-")
    try:
        if len(parts) != 2:
            raise ValueError
        start, end = float(parts[0]), float(parts[1])
    except ValueError:
        raise GenerateError(f"bad time range {text!r}: expected START-END in seconds, e.g. 3.0-6.0") from None
    if not 0.0 <= start < end <= 10.0:
        raise GenerateError(f"bad time range {text!r}: need 0 <= START < END <= 10 (seconds of the clip)")
    return start, end


def load_recorded_tokenizer(record: dict[str, Any], modality: str, override: str | os.PathLike | None) -> Any:
    """The tokenizer a checkpoint records (or the `override` file), refused unless its fingerprint matches."""
    path = Path(override) if override is not None else Path(record.get("path", ""))
    flag = f"--{modality}-tokenizer"
    if not path.is_file():
        where = "given" if override is not None else "recorded in the checkpoint"
        raise GenerateError(f"{modality} tokenizer {str(path)!r} ({where}) not found; pass {flag} FILE")
    try:
        tok = load_tokenizer(path, record["kind"], modality=record.get("modality", modality))
    except Exception as e:  # noqa: BLE001 - safetensors, pickle, shape errors: all "not that tokenizer"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GenerateError(f"{path}: cannot load as a {record.get('kind')} {modality} tokenizer ({msg})") from e
    if tok.fingerprint != record.get("fingerprint"):
        raise GenerateError(
            f"{path}: {modality} tokenizer fingerprint {tok.fingerprint[:12]} does not match the checkpoint's "
            f"{str(record.get('fingerprint'))[:12]} (its tokens were made by another tokenizer)")
    return tok


def load_bundle(checkpoint: str | os.PathLike, image_tokenizer: str | os.PathLike | None = None,
                audio_tokenizer: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                use_ema: bool = True) -> Bundle:
    """Load a checkpoint (CheckpointError if it is not one) and its tokenizers (GenerateError on mismatch)."""
    try:
        device = resolve_device(str(device))
    except DeviceError as e:
        raise GenerateError(str(e)) from None
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    records = ckpt.get("tokenizers") or {}
    if "image" not in records or "audio" not in records:
        raise GenerateError(f"{checkpoint}: the checkpoint records no image/audio tokenizers")
    img_tok = load_recorded_tokenizer(records["image"], "image", image_tokenizer)
    aud_tok = load_recorded_tokenizer(records["audio"], "audio", audio_tokenizer)
    model = model_from_checkpoint(ckpt, use_ema=use_ema)
    cfg = getattr(model, "cfg", None)
    for tok, name, size in ((img_tok, "image", getattr(cfg, "image_codebook", None)),
                            (aud_tok, "audio", getattr(cfg, "audio_codebook", None))):
        if size is not None and tok.codebook_size != size:
            raise GenerateError(f"{name} tokenizer has {tok.codebook_size} codes, the model {size}")
    img_tok = img_tok.to(device) or img_tok
    aud_tok = aud_tok.to(device) or aud_tok
    return Bundle(model=model.to(device).eval(), image_tokenizer=img_tok, audio_tokenizer=aud_tok, device=device,
                  checkpoint=str(checkpoint), step=int(ckpt.get("step", 0)))


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The transformer's autocast for a precision name (resolved by avtok.model.precision, as in training)."""
    try:
        return autocast(resolve_precision(precision, device), device)
    except DeviceError as e:
        raise GenerateError(str(e)) from None


@torch.no_grad()
def encode_images(bundle: Bundle, images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 256, 256, 3] -> Long [N, 256]."""
    return bundle.image_tokenizer.encode(frames_to_input(images).to(bundle.device)).long()


@torch.no_grad()
def encode_spec01(bundle: Bundle, spec01: np.ndarray) -> torch.Tensor:
    """float [N, 80, 848] -> Long [N, 265]."""
    return bundle.audio_tokenizer.encode(mel_to_input(spec01).to(bundle.device)).long()


@torch.no_grad()
def decode_images(bundle: Bundle, tokens: torch.Tensor) -> np.ndarray:
    return output_to_frames(bundle.image_tokenizer.decode(tokens.to(bundle.device)))


@torch.no_grad()
def decode_spec01(bundle: Bundle, tokens: torch.Tensor) -> np.ndarray:
    return output_to_spec01(bundle.audio_tokenizer.decode(tokens.to(bundle.device))).astype(np.float32)


def generate(bundle: Bundle, task: str, image: np.ndarray | None = None, spec01: np.ndarray | None = None,
             hole: tuple[float, float] | None = None, num_samples: int = 1, seed: int = 0, steps: int = 30,
             cfg: float = 3.0, cfg_schedule: str = "constant", temperature: float = 4.5,
             vocoder: Callable[[np.ndarray], torch.Tensor] | None = None,
             progress: Callable[[int, int], None] | None = None, precision: str = "fp32",
             top_p: float = 1.0, joint_order: str = "together", token_temperature: float = 1.0,
             confidence: str = "guided") -> Generation:
    """Run one task for `num_samples` samples of the same input (seeded); decode and vocode the result.

    image: uint8 [256, 256, 3]; spec01: float [80, 848]; hole: (start_s, end_s) for "inpaint".
    vocoder: spec01 [N, 80, T] -> waveform [N, T·256]; None skips the waveform.
    progress(step, steps) is called after each sampling step. precision: the transformer's autocast
    ("fp32", "bf16", "fp16" or "auto": see avtok.model.precision); tokenizers stay as they are.
    top_p, joint_order, token_temperature, confidence: as `avtok.model.sampler.sample` (an image-first joint runs
    2·steps steps).
    """
    if task not in TASKS:
        raise GenerateError(f"unknown task {task!r}; choose one of {TASKS}")
    if num_samples < 1:
        raise GenerateError("num_samples must be at least 1")
    needs_image = task in ("image2audio", "inpaint")
    needs_audio = task in ("audio2image", "inpaint")
    if needs_image and image is None:
        raise GenerateError(f"{task} needs an image")
    if needs_audio and spec01 is None:
        raise GenerateError(f"{task} needs audio")
    if task == "inpaint" and hole is None:
        raise GenerateError("inpaint needs a time range (START-END seconds)")
    n = num_samples
    img_tokens = encode_images(bundle, np.repeat(image[None], n, 0)) if image is not None else None
    aud_tokens = encode_spec01(bundle, np.repeat(np.asarray(spec01, np.float32)[None], n, 0)) \
        if spec01 is not None else None
    gen = torch.Generator(device=bundle.device).manual_seed(int(seed))
    audio_hole = seconds_to_audio_hole(*hole) if task == "inpaint" else None
    total = steps * (2 if task == "joint" and joint_order == "image-first" else 1)
    done = itertools.count(1)
    callback = (lambda _t, _ki, _ka: progress(next(done), total)) if progress is not None else None
    with autocast_for(precision, bundle.device):
        out_i, out_a = sample(bundle.model, task, image_tokens=img_tokens if task != "audio2image" else None,
                              audio_tokens=aud_tokens if task != "image2audio" else None, steps=steps, cfg=cfg,
                              cfg_schedule=cfg_schedule, choice_temperature=temperature, generator=gen,
                              audio_hole=audio_hole, num_samples=n, callback=callback, top_p=top_p,
                              joint_order=joint_order, token_temperature=token_temperature, confidence=confidence)
    images = decode_images(bundle, out_i) if task in ("audio2image", "joint") else np.repeat(image[None], n, 0)
    if task == "audio2image":
        mels = np.repeat(np.asarray(spec01, np.float32)[None], n, 0)
    else:
        mels = decode_spec01(bundle, out_a)
    waves = None
    if vocoder is not None and task != "audio2image":
        waves = np.asarray(vocoder(mels), dtype=np.float32)
    meta = {"task": task, "seed": seed, "steps": steps, "cfg": cfg, "cfg_schedule": cfg_schedule,
            "temperature": temperature, "top_p": top_p, "token_temperature": token_temperature,
            "confidence": confidence,
            "joint_order": joint_order, "precision": precision,
            "checkpoint": bundle.checkpoint, "step": bundle.step}
    if audio_hole is not None:
        meta["hole_s"] = list(hole)
        meta["hole_columns"] = audio_hole.view(*AUDIO_GRID)[0].nonzero().flatten().tolist()
    return Generation(task=task, images=images, spec01=mels, waves=waves, image_tokens=out_i.cpu(),
                      audio_tokens=out_a.cpu(), meta=meta)


# A small perceptual colour map (dark blue -> magenta -> yellow), so no plotting library is needed.
_STOPS = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                   [250, 193, 39], [252, 255, 164]], dtype=np.float64)


def colorize(spec01: np.ndarray) -> np.ndarray:
    """float [80, T] in [0, 1] -> uint8 [80, T, 3], low frequencies at the bottom."""
    x = np.clip(np.asarray(spec01, np.float64), 0.0, 1.0)[::-1] * (len(_STOPS) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_STOPS) - 2)
    frac = (x - lo)[..., None]
    return np.round(_STOPS[lo] * (1 - frac) + _STOPS[lo + 1] * frac).astype(np.uint8)


def side_by_side(image: np.ndarray, spec01: np.ndarray, gap: int = 8) -> np.ndarray:
    """uint8 [256, 256 + gap + T, 3]: the image, then the mel stretched to the image's height."""
    from PIL import Image

    h = image.shape[0]
    mel = colorize(spec01)
    mel = np.asarray(Image.fromarray(mel).resize((mel.shape[1], h), Image.Resampling.NEAREST))
    out = np.full((h, image.shape[1] + gap + mel.shape[1], 3), 255, np.uint8)
    out[:, : image.shape[1]] = image
    out[:, image.shape[1] + gap:] = mel
    return out
