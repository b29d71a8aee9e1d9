"""`avtok generate` with files: read the inputs, sample (`avtok.model.generate`), write wav/png outputs.

Everything that can fail is checked before any file is written, and outputs are written atomically
(temp file + rename), so a failed run leaves nothing half-written. An existing file is never
replaced unless asked (`overwrite=True`, the CLI's `--overwrite`): outputs that exist are refused
before any work, and the final write itself never takes a name that appeared meanwhile.
"""

from __future__ import annotations

import os
from pathlib import Path

from avtok.model.files import write_output
from avtok.model.generate import generate, load_bundle, parse_time_range, side_by_side
from avtok.model.vocoder import load_vocoder

from .media import MediaError, load_audio_spec01, load_image, png_bytes, wav_bytes


def write_outputs(files: dict[str | os.PathLike, bytes], overwrite: bool = False) -> list[Path]:
    """Write every (path -> bytes) atomically, creating parent folders; returns the paths written.

    Without `overwrite` a path that exists is left alone; OutputError (a ValueError) names it, and
    any output that cannot be written."""
    return [write_output(path, data, overwrite=overwrite) for path, data in files.items()]


def output_paths(task: str, out: str | os.PathLike | None, image: str | os.PathLike | None,
                 audio: str | os.PathLike | None, num_samples: int, overwrite: bool = True) -> list[dict[str, Path]]:
    """Per sample, the files to write: {"wav", "png"} (audio generated) or {"png"} (audio2image).

    Defaults: `foo.jpg` -> `foo.wav` + `foo.png` beside the image; `x.wav` -> `x.png` (audio2image)
    or `x-inpaint.wav` (inpaint); `joint.wav` in the current folder. N > 1 samples add `-{i}`.
    An input file is never an output; without `overwrite` neither is any file that exists.
    """
    if out is not None:
        base = Path(out)
    elif task == "image2audio":
        base = Path(image).with_suffix(".wav")
    elif task == "audio2image":
        base = Path(audio).with_suffix(".png")
    elif task == "inpaint":
        base = Path(audio).with_name(Path(audio).stem + "-inpaint.wav")
    else:
        base = Path("joint.wav")
    stems = [base.with_suffix("")] if num_samples == 1 else [
        base.with_name(f"{base.stem}-{i}") for i in range(num_samples)]
    if task == "audio2image":
        paths = [{"png": Path(f"{s}.png")} for s in stems]
    else:
        paths = [{"wav": Path(f"{s}.wav"), "png": Path(f"{s}.png")} for s in stems]
    inputs = {Path(p).resolve() for p in (image, audio) if p is not None}
    for group in paths:
        for p in group.values():
            if p.resolve() in inputs:
                raise MediaError(f"{p}: output would overwrite an input file; pass --out")
            if p.is_dir():
                raise MediaError(f"{p}: is a folder; pass another --out")
            if not overwrite and (p.exists() or p.is_symlink()):
                raise MediaError(f"{p}: exists already; pass --overwrite to replace it (or another --out)")
    return paths


def run_generate(task: str, checkpoint: str | os.PathLike, *, image: str | os.PathLike | None = None,
                 audio: str | os.PathLike | None = None, hole: str | None = None,
                 out: str | os.PathLike | None = None, num_samples: int = 1, seed: int = 0, steps: int = 30,
                 cfg: float = 3.0, cfg_schedule: str = "constant", temperature: float = 4.5,
                 device: str = "cpu", vocoder: str | os.PathLike | None = None,
                 image_tokenizer: str | os.PathLike | None = None, audio_tokenizer: str | os.PathLike | None = None,
                 precision: str = "auto", overwrite: bool = False, progress=None, top_p: float = 1.0,
                 joint_order: str = "together", token_temperature: float = 1.0,
                 confidence: str = "guided") -> list[Path]:
    """`avtok generate`: read inputs, sample, decode, vocode, then write every output file.

    Everything that can fail (inputs, checkpoint, tokenizers, vocoder file) is checked before any
    file is written. Raises MediaError / GenerateError / CheckpointError / VocoderError (all
    ValueError) with a one-line message. Existing outputs are refused unless `overwrite`. Returns the
    files written.
    """
    span = parse_time_range(hole) if task == "inpaint" else None
    if task in ("image2audio", "inpaint") and image is None:
        raise MediaError(f"{task} needs --image")
    if task in ("audio2image", "inpaint") and audio is None:
        raise MediaError(f"{task} needs --audio")
    paths = output_paths(task, out, image, audio, num_samples, overwrite=overwrite)
    img = load_image(image) if image is not None else None
    mel = load_audio_spec01(audio) if audio is not None else None
    bundle = load_bundle(checkpoint, image_tokenizer, audio_tokenizer, device=device)
    voc = load_vocoder(vocoder, device=bundle.device) if task != "audio2image" else None
    result = generate(bundle, task, image=img, spec01=mel, hole=span, num_samples=num_samples, seed=seed,
                      steps=steps, cfg=cfg, cfg_schedule=cfg_schedule, temperature=temperature, vocoder=voc,
                      progress=progress, precision=precision, top_p=top_p, joint_order=joint_order,
                      token_temperature=token_temperature, confidence=confidence)
    files: dict[Path, bytes] = {}
    for i, group in enumerate(paths):
        if "wav" in group:
            files[group["wav"]] = wav_bytes(result.waves[i])
            files[group["png"]] = png_bytes(side_by_side(result.images[i], result.spec01[i]))
        else:
            files[group["png"]] = png_bytes(result.images[i])
    return write_outputs(files, overwrite=overwrite)
