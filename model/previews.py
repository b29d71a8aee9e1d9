"""Sample previews during training: hear and see what the model generates for fixed held-out clips.

Every `sample_every` steps (rank 0): image→audio from frame `EVAL_FRAME` of the first N clips of the
held-out split, and audio→image from their sounds, with the run's current (EMA if kept) weights and a
fixed seed, so consecutive previews differ only by training. Tokens are decoded with the tokenizers
that made the shards (fingerprints checked) and audio vocoded with Griffin-Lim. Written to
`OUT/samples/step-NNNNNN/` as `<clip>_i2a.wav`, `<clip>_i2a_mel.png` and `<clip>_a2i.png` (clip names
from `clip_stem`: never a path built from a video id) and returned for the dashboard.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import tokenizer_records
from .data import SplitData
from .evaluate import clip_stem
from .files import atomic_write_bytes
from .generate import colorize, load_recorded_tokenizer
from .geometry import EVAL_FRAME, SAMPLE_RATE
from .sampler import sample
from .tokenizers import output_to_frames, output_to_spec01
from .vocoder import griffin_lim_vocoder


@dataclass
class Preview:
    """One clip's previews at one step."""

    name: str  # clip_stem of the clip
    wave: np.ndarray  # float32 [T] at SAMPLE_RATE, image→audio
    mel: np.ndarray  # uint8 [80, 848, 3], the generated audio's mel
    image: np.ndarray  # uint8 [256, 256, 3], audio→image


class Previewer:
    """Generates, writes and returns the previews of a fixed set of held-out clips."""

    def __init__(self, held_out: SplitData, index: dict[str, Any], clips: int, device: torch.device,
                 steps: int = 12, cfg: float = 3.0, seed: int = 0) -> None:
        """Raises ValueError (GenerateError) when the shards' tokenizers cannot be loaded."""
        records = tokenizer_records(index)
        image_tok = load_recorded_tokenizer(records["image"], "image", None)
        audio_tok = load_recorded_tokenizer(records["audio"], "audio", None)
        self.image_tok = image_tok.to(device) or image_tok  # some tokenizers move in place and return None
        self.audio_tok = audio_tok.to(device) or audio_tok
        # Griffin-Lim; on a CPU without the NNLS refinement of the mel inverse (seconds per clip saved)
        nnls = 100 if device.type == "cuda" else 0
        self.vocoder = lambda spec01: griffin_lim_vocoder(torch.from_numpy(spec01).to(device), nnls_iters=nnls).cpu()
        n = min(clips, len(held_out))
        self.names = [clip_stem(i, vid) for i, vid in enumerate(held_out.video_ids[:n])]
        self.image = held_out.image[:n, EVAL_FRAME].long().to(device)
        self.audio = held_out.audio[:n].long().to(device)
        self.device, self.steps, self.cfg, self.seed = device, steps, cfg, seed

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, step: int, out: Path, autocast: Any) -> list[Preview]:
        was_training = model.training
        model.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        with autocast:
            _, aud = sample(model, "image2audio", image_tokens=self.image, steps=self.steps, cfg=self.cfg,
                            generator=gen)
            img, _ = sample(model, "audio2image", audio_tokens=self.audio, steps=self.steps, cfg=self.cfg,
                            generator=gen)
        model.train(was_training)
        spec01 = output_to_spec01(self.audio_tok.decode(aud)).astype(np.float32)
        waves = np.asarray(self.vocoder(spec01), dtype=np.float32)
        images = output_to_frames(self.image_tok.decode(img))
        previews = [Preview(name, waves[i], colorize(spec01[i]), images[i]) for i, name in enumerate(self.names)]
        write_previews(out / "samples" / f"step-{step:06d}", previews)
        return previews


def write_previews(folder: Path, previews: list[Preview]) -> None:
    import soundfile as sf
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for p in previews:
        buf = io.BytesIO()
        sf.write(buf, p.wave, SAMPLE_RATE, format="WAV")
        atomic_write_bytes(folder / f"{p.name}_i2a.wav", buf.getvalue())
        for suffix, arr in (("i2a_mel", p.mel), ("a2i", p.image)):
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            atomic_write_bytes(folder / f"{p.name}_{suffix}.png", buf.getvalue())
