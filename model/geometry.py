"""The clip, the mel and the token grid: every number the stages agree on, owned here and only here.

A clip is `CLIP_SECONDS` of video sampled as `N_FRAMES` RGB frames of `FRAME_SIZE`² (frame i is the one
shown at start + (i + 0.5)·CLIP_SECONDS/N_FRAMES s) and the SpecVQGAN "spec01" log-mel of its audio
(`MEL_PARAMS`, shape `MEL_SHAPE`). The tokenizers turn a frame into an `IMAGE_GRID` of tokens (f16) and
the mel into an `AUDIO_GRID` (rows = mel bands, row 0 lowest; columns = time). docs/formats.md gives
the derivations.
"""

from __future__ import annotations

from typing import Any

CLIP_SECONDS = 10.0
N_FRAMES = 10
FRAME_SIZE = 256
JPEG_QUALITY = 95

# The SpecVQGAN VGGSound recipe. Recorded in extracted/ and tokens/ index.json; a stage refuses input
# made with anything else.
MEL_PARAMS: dict[str, Any] = {
    "recipe": "specvqgan-spec01",
    "sample_rate": 22050,
    "n_samples": 220500,
    "n_fft": 1024,
    "hop_length": 256,
    "window": "hann-periodic",
    "power": 1.0,
    "n_mels": 80,
    "fmin": 125.0,
    "fmax": 7600.0,
    "mel_norm": "slaney",
    "mel_htk": False,
    "amin": 1e-5,
    "spec01": "clip((20*log10(max(mel,amin))+80)/100,0,1)",
    "trim_frames": 860,
    "crop": [6, 854],
    "downmix": "ffmpeg-swr",
}
SAMPLE_RATE: int = MEL_PARAMS["sample_rate"]
N_SAMPLES: int = MEL_PARAMS["n_samples"]
HOP: int = MEL_PARAMS["hop_length"]
N_FFT: int = MEL_PARAMS["n_fft"]
N_MELS: int = MEL_PARAMS["n_mels"]
CROP_START: int = MEL_PARAMS["crop"][0]
MEL_FRAMES: int = MEL_PARAMS["crop"][1] - MEL_PARAMS["crop"][0]  # 848
MEL_SHAPE = (N_MELS, MEL_FRAMES)  # (80, 848)

PATCH = 16  # both tokenizers downsample by 16
IMAGE_GRID = (FRAME_SIZE // PATCH, FRAME_SIZE // PATCH)  # (16, 16)
AUDIO_GRID = (N_MELS // PATCH, MEL_FRAMES // PATCH)  # (5, 53)
IMAGE_TOKENS = IMAGE_GRID[0] * IMAGE_GRID[1]  # 256
AUDIO_TOKENS = AUDIO_GRID[0] * AUDIO_GRID[1]  # 265
AUDIO_COLUMN_FRAMES = MEL_FRAMES // AUDIO_GRID[1]  # 16 mel frames per audio token column
AUDIO_COLUMN_S = AUDIO_COLUMN_FRAMES * HOP / SAMPLE_RATE  # 0.186 s of sound per column


def audio_column_edge_s(w: int) -> float:
    """Where audio token column w begins, in seconds of the clip: its first mel frame is
    AUDIO_COLUMN_FRAMES·w + CROP_START and every frame owns one hop around its centre."""
    return ((AUDIO_COLUMN_FRAMES * w + CROP_START) * HOP - HOP / 2) / SAMPLE_RATE
AUDIO_ORDER = "row-major over (mel band, time); row 0 = lowest band"

# What the model can be asked to do; image→audio is the headline.
TASKS = ("image2audio", "audio2image", "joint", "inpaint")
# The frame that stands for a clip's image wherever one image per clip is needed (eval, demo, previews).
EVAL_FRAME = N_FRAMES // 2
