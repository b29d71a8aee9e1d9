"""Media files: read a user's image or audio file into model-ready arrays; encode results as wav/png bytes.

Reading follows the extract recipe so a user's file looks like training data: images get the short
side resized to 256 and a centre crop (area averaging when shrinking, as extract's swscale AREA);
audio is decoded with PyAV, downmixed and resampled to 22050 Hz mono by libswresample (ffmpeg's
`-ac 1` semantics), cut or zero-padded to 10 s, and turned into spec01 by `avtok.model.mel`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from avtok.model.geometry import FRAME_SIZE, N_SAMPLES, SAMPLE_RATE

from .decoded import center_crop, error_text, scaled_size


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
    from avtok.model.mel import spec01

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
