"""Synthetic token shards for the training tests: audio tokens are a fixed function of every frame's tokens.

Each clip belongs to one of `classes` classes, which own disjoint ranges of the image codebook. Its 10
frames are random tokens from its class's range (different per frame; a fraction `noise` of positions
uniformly random), and its audio tokens are the class's fixed audio template (one token per mel row). So whichever frame the
trainer picks determines the audio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from avtok.model.token_shards import (
    AUDIO_GRID,
    IMAGE_TOKENS,
    N_FRAMES,
    make_meta,
    write_token_index,
    write_token_shard,
)

MEL = {"sr": 22050, "n_fft": 1024, "hop": 256, "n_mels": 80}


def synth_meta(codebook: int = 32, fingerprint: str = "f" * 64) -> dict:
    tok = {"kind": "patch-kmeans", "fingerprint": fingerprint, "path": "/synthetic.safetensors",
           "codebook_size": codebook}
    return make_meta(image_tokenizer={**tok, "modality": "image"}, audio_tokenizer={**tok, "modality": "audio"},
                     mel=MEL, image_codebook=codebook, audio_codebook=codebook)


def write_synthetic(folder: str | Path, shard_rows: tuple[int, ...] = (96, 64), test_rows: int = 32,
                    classes: int = 8, codebook: int = 32, noise: float = 0.3, seed: int = 0,
                    audio_rows: bool = True) -> dict:
    """Write token shards (train rows per shard as given, plus `test_rows` test clips in the last shard)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if audio_rows:  # one token per mel-band row and class, held over the 53 time steps
        aud_t = np.repeat(rng.integers(0, codebook, (classes, AUDIO_GRID[0])), AUDIO_GRID[1], axis=1)
    else:  # an independent token per position and class
        aud_t = rng.integers(0, codebook, (classes, AUDIO_GRID[0] * AUDIO_GRID[1]))
    meta = synth_meta(codebook)
    entries = []
    for s, rows in enumerate(shard_rows):
        n = rows + (test_rows if s == len(shard_rows) - 1 else 0)
        cls = rng.integers(0, classes, n)
        width = codebook // classes
        image = cls[:, None, None] * width + rng.integers(0, width, (n, N_FRAMES, IMAGE_TOKENS))
        noisy = rng.random(image.shape) < noise
        image = np.where(noisy, rng.integers(0, codebook, image.shape), image)
        splits = ["train"] * rows + ["test"] * (n - rows)
        entries.append(write_token_shard(folder / f"tokens-{s:06d}.parquet", meta,
                                         [f"clip{s}_{i}" for i in range(n)], [f"c{c}" for c in cls], splits,
                                         image.astype(np.uint16), aud_t[cls].astype(np.uint16)))
    return write_token_index(folder, meta, entries)
