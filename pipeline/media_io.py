"""Media files for `avtok generate`: read an image or audio file into model-ready arrays, write results.

Reading follows the extract recipe so a user's file looks like training data: images get the short
side resized to 256 and a centre crop (area averaging when shrinking, as extract's swscale AREA);
audio is decoded with PyAV, downmixed and resampled to 22050 Hz mono by libswresample (ffmpeg's
`-ac 1` semantics), cut or zero-padded to 10 s, and turned into spec01 by `avtok.pipeline.mel`.
Writing is atomic (temp file + rename) so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .decode import N_SAMPLES, SAMPLE_RATE, center_crop, error_text, scaled_size
from .extracted import FRAME_SIZE
from .index import atomic_write_bytes


class MediaError(ValueError):
    """An input file that cannot be used; the message is one line naming the file."""


def load_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 [256, 256, 3] RGB: short side resized to 256, centre crop."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")  # phone photos: honour the EXIF rotation
            w, h = scaled_size(im.width, im.height)
            shrink = w <= im.width
            im = im.resize((w, h), Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise MediaError(f"{path}: not a readable image ({error_text(e)})") from e
    return center_crop(arr, FRAME_SIZE)


def load_audio(path: str | os.PathLike, start_s: float = 0.0) -> np.ndarray:
    """float32 [220500]: 10 s from `start_s` of any audio (or video) file, 22050 Hz mono, zero-padded."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such audio file")
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            need = round(start_s * SAMPLE_RATE) + N_SAMPLES
            have = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    have += chunks[-1].shape[0]
                if have >= need:
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as e:
        raise MediaError(f"{path}: not a readable audio file ({error_text(e)})") from e
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    audio = audio[round(start_s * SAMPLE_RATE):]
    if audio.size == 0:
        raise MediaError(f"{path}: no audio samples after {start_s:g} s")
    out = np.zeros(N_SAMPLES, np.float32)
    out[: min(N_SAMPLES, audio.size)] = audio[:N_SAMPLES]
    return out


def load_audio_spec01(path: str | os.PathLike, start_s: float = 0.0) -> np.ndarray:
    """float32 [80, 848] spec01 of the 10 s at `start_s` of an audio file."""
    from .mel import spec01

    return spec01(load_audio(path, start_s))


def wav_bytes(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 16-bit PCM WAV file of a float waveform in [-1, 1]."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, np.float32), -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file of a uint8 [H, W, 3] (or [H, W]) array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return buf.getvalue()


def write_outputs(files: dict[str | os.PathLike, bytes]) -> list[Path]:
    """Write every (path -> bytes) atomically, creating parent folders; returns the paths written."""
    written = []
    for path, data in files.items():
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        written.append(path)
    return written


def output_paths(task: str, out: str | os.PathLike | None, image: str | os.PathLike | None,
                 audio: str | os.PathLike | None, num_samples: int) -> list[dict[str, Path]]:
    """Per sample, the files to write: {"wav", "png"} (audio generated) or {"png"} (audio2image).

    Defaults: `foo.jpg` -> `foo.wav` + `foo.png` beside the image; `x.wav` -> `x.png` (audio2image)
    or `x-inpaint.wav` (inpaint); `joint.wav` in the current folder. N > 1 samples add `-{i}`.
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
    return paths


def run_generate(task: str, checkpoint: str | os.PathLike, *, image: str | os.PathLike | None = None,
                 audio: str | os.PathLike | None = None, hole: str | None = None,
                 out: str | os.PathLike | None = None, num_samples: int = 1, seed: int = 0, steps: int = 30,
                 cfg: float = 3.0, cfg_schedule: str = "constant", temperature: float = 4.5,
                 device: str = "cpu", vocoder: str | os.PathLike | None = None,
                 image_tokenizer: str | os.PathLike | None = None, audio_tokenizer: str | os.PathLike | None = None,
                 precision: str = "auto", progress=None) -> list[Path]:
    """`avtok generate`: read inputs, sample, decode, vocode, then write every output file.

    Everything that can fail (inputs, checkpoint, tokenizers, vocoder file) is checked before any
    file is written. Raises MediaError / GenerateError / CheckpointError / VocoderError (all
    ValueError) with a one-line message. Returns the files written.
    """
    from avtok.model.generate import generate, load_bundle, parse_time_range, side_by_side
    from avtok.model.vocoder import load_vocoder

    span = parse_time_range(hole) if task == "inpaint" else None
    if task in ("image2audio", "inpaint") and image is None:
        raise MediaError(f"{task} needs --image")
    if task in ("audio2image", "inpaint") and audio is None:
        raise MediaError(f"{task} needs --audio")
    paths = output_paths(task, out, image, audio, num_samples)
    img = load_image(image) if image is not None else None
    mel = load_audio_spec01(audio) if audio is not None else None
    bundle = load_bundle(checkpoint, image_tokenizer, audio_tokenizer, device=device)
    voc = load_vocoder(vocoder, device=bundle.device) if task != "audio2image" else None
    result = generate(bundle, task, image=img, spec01=mel, hole=span, num_samples=num_samples, seed=seed,
                      steps=steps, cfg=cfg, cfg_schedule=cfg_schedule, temperature=temperature, vocoder=voc,
                      progress=progress, precision=precision)
    files: dict[Path, bytes] = {}
    for i, group in enumerate(paths):
        if "wav" in group:
            files[group["wav"]] = wav_bytes(result.waves[i])
            files[group["png"]] = png_bytes(side_by_side(result.images[i], result.spec01[i]))
        else:
            files[group["png"]] = png_bytes(result.images[i])
    return write_outputs(files)
