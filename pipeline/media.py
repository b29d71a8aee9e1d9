"""Media files: read a user's image or audio file into model-ready arrays; encode results as wav/png bytes.

Reading follows the extract recipe so a user's file looks like training data: images get the short
side resized to 256 and a centre crop (area averaging when shrinking, as extract's swscale AREA),
after turning any PIL mode into the RGB a viewer shows, with bounded memory for huge images;
audio is decoded with PyAV, downmixed and resampled to 22050 Hz mono by libswresample (ffmpeg's
`-ac 1` semantics), cut or zero-padded to 10 s, and turned into spec01 by `avtok.model.mel`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from avtok.model.geometry import FRAME_SIZE, N_SAMPLES, SAMPLE_RATE

from .decoded import error_text, scaled_size


class MediaError(ValueError):
    """An input file that cannot be used; the message is one line naming the file."""


# PIL's own warning threshold (~89.5 MP, 0.27 GB as RGB): larger images are decoded at a reduced
# scale where the format allows (JPEG's DCT scaling) and refused otherwise, so memory stays bounded.
MAX_IMAGE_PIXELS = 89_478_485
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def load_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 [256, 256, 3] RGB as a person sees the file: short side resized to 256, centre crop.

    Every mode PIL opens becomes display RGB (see `to_display_rgb`); EXIF rotation is honoured.
    Images over MAX_IMAGE_PIXELS are decoded at a reduced scale (JPEG) or refused, before any pixel
    is decoded; only the centre crop's source region is resampled, so extreme aspect ratios cost
    no more than the file's own pixels.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with a clear message
            with Image.open(path) as im:
                _reduce_while_decoding(im, path)
                im.load()
                rgb = to_display_rgb(ImageOps.exif_transpose(im))  # phone photos: honour the EXIF rotation
    except Image.DecompressionBombError as e:
        raise MediaError(f"{path}: image too large to decode safely ({error_text(e).split(', could')[0]})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise MediaError(f"{path}: not a readable image ({error_text(e)})") from e
    return _resize_crop(rgb)


def _reduce_while_decoding(im, path: Path) -> None:
    """Decode a JPEG over the pixel limit at 1/2, 1/4 or 1/8 scale; refuse any other image over it."""
    w, h = im.size
    if w * h <= MAX_IMAGE_PIXELS:
        return
    if im.format == "JPEG":
        for k in (2, 4, 8):
            if (w // k) * (h // k) <= MAX_IMAGE_PIXELS:
                im.draft(im.mode, (-(-w // k), -(-h // k)))
                break
    if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
        raise MediaError(f"{path}: image too large ({w}×{h} = {w * h / 1e6:.0f} MP; the limit is "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP)")


def to_display_rgb(im) -> np.ndarray:
    """uint8 [H, W, 3]: the RGB a viewer shows for a PIL image of any mode.

    Alpha (RGBA, LA, PA, P or L/RGB with a transparent colour) is composited on white; 16-bit and
    32-bit integer grey (I;16*, I) is scaled by 255/65535; float grey (F) is taken as 0..1 when its
    maximum is ≤ 1, else as 0..255; LAB goes through littlecms to sRGB; CMYK, YCbCr, HSV, 1-bit, L and
    palettes use PIL's conversions (Adobe's inverted CMYK JPEGs are un-inverted by PIL's decoder).
    """
    mode = im.mode
    if mode in _SIXTEEN_BIT:
        grey = np.clip(np.asarray(im).astype(np.float64), 0, 65535) * (255.0 / 65535.0)
        return _grey_rgb(grey)
    if mode == "F":
        grey = np.nan_to_num(np.asarray(im).astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if grey.size and grey.max() <= 1.0:
            grey = grey * 255.0
        return _grey_rgb(grey)
    if mode == "LAB":
        from PIL import ImageCms

        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                            "LAB", "RGB")
        return np.asarray(ImageCms.applyTransform(im, transform), dtype=np.uint8)
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint32)
        alpha = rgba[..., 3:4]
        # integer "over" on white, rounded: c·a/255 + 255·(1 - a/255)
        out = (rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return out.astype(np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _grey_rgb(grey: np.ndarray) -> np.ndarray:
    g = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _resize_crop(rgb: np.ndarray) -> np.ndarray:
    """The extract recipe (short side to 256, centre crop) resampling only the crop's source region:
    identical pixels to resizing the whole image and cropping, at the cost of the crop alone."""
    from PIL import Image

    src_h, src_w = rgb.shape[:2]
    w, h = scaled_size(src_w, src_h)
    left, top = (w - FRAME_SIZE) // 2, (h - FRAME_SIZE) // 2
    sx, sy = src_w / w, src_h / h
    box = (left * sx, top * sy, (left + FRAME_SIZE) * sx, (top + FRAME_SIZE) * sy)
    shrink = w <= src_w
    im = Image.fromarray(np.ascontiguousarray(rgb))
    out = im.resize((FRAME_SIZE, FRAME_SIZE), Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC,
                    box=box)
    return np.asarray(out, dtype=np.uint8)


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
