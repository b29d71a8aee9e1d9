"""The demo's oracles: image class exact on real frames and on patch-k-means reconstructions, the
inpainting span class and seam-click measure, joint agreement; the synthetic clips are bit-reproducible."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from avtok.model.mel import spec01
from avtok.model.sampler import seconds_to_audio_hole
from avtok.model.tokenizers import frames_to_input, output_to_frames
from avtok.model.tokenizers.patch_kmeans import PatchKMeansTokenizer, fit_codebook
from avtok.pipeline import oracles as orc
from avtok.pipeline import synthetic as syn
from avtok.pipeline.decode import decode
from avtok.pipeline.demo import fast_griffin_lim

SR = syn.SAMPLE_RATE


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, list]:
    """Frames 0 and 5 of 4 clips a class: 3 to fit a codebook on, 1 held out."""
    root = tmp_path_factory.mktemp("oracle_clips")
    fit, held, labels = [], [], []
    for k in range(syn.NUM_CLASSES):
        for i in range(4):
            path = root / f"{k}-{i}.mp4"
            syn.make_clip(path, k, 1000 + 10 * k + i)
            frames = decode(str(path)).frames
            (held if i == 3 else fit).append(frames[[0, 5]])
            if i == 3:
                labels += [syn.CLASS_NAMES[k]] * 2
    return {"fit": np.concatenate(fit), "held": np.concatenate(held), "labels": labels}


def test_image_oracle_exact_on_real_frames(clips) -> None:
    res = orc.image_oracle_scores(clips["held"], clips["labels"])
    assert res["accuracy"] == 1.0, res["confusion"]
    fits = [orc.classify_image(f) for f in clips["fit"]]
    assert [f["class"] for f in fits] == [k for k in range(8) for _ in range(6)]
    solid = [f["fill"] for f in fits if f["motif"] == "solid"]
    striped = [f["fill"] for f in fits if f["motif"] == "striped"]
    assert min(solid) > 0.95 and max(striped) < 0.65  # far from the 0.8 line both ways


def test_image_oracle_exact_on_tokenizer_reconstructions(clips) -> None:
    torch.manual_seed(0)
    cents = fit_codebook(frames_to_input(clips["fit"]), 64, iters=10, max_points=8192, seed=0)
    tok = PatchKMeansTokenizer(cents, "image", "mem", "test")
    recon = output_to_frames(tok.decode(tok.encode(frames_to_input(clips["held"]))))
    res = orc.image_oracle_scores(recon, clips["labels"])
    assert res["accuracy"] == 1.0, res["confusion"]
    assert res["colour_accuracy"] == 1.0 and res["motif_accuracy"] == 1.0


def test_image_oracle_wrong_and_empty_pictures() -> None:
    grey = np.full((256, 256, 3), 80, np.uint8)
    assert orc.classify_image(grey)["class"] == -1
    red_striped = grey.copy()
    for j in range(0, 5, 2):  # the red class is solid: red stripes are no class at all
        red_striped[32 + 16 * j : 48 + 16 * j, 32:112] = (224, 40, 40)
    res = orc.classify_image(red_striped)
    assert res["colour"] == 0 and res["motif"] == "striped" and res["class"] == -1


def test_hole_seams_match_the_token_hole() -> None:
    hole = seconds_to_audio_hole(3.0, 7.0).numpy()
    seams = orc.hole_seams_s(hole)
    assert len(seams) == 2 and 2.5 < seams[0] < 3.0 and 7.0 < seams[1] < 7.5


def _vocoded(k: int, seed: int) -> np.ndarray:
    wave = syn.synth_audio(k, np.random.default_rng(seed), noise=True)  # a recording's faint noise floor
    return fast_griffin_lim(12)(spec01(wave)[None])[0].numpy()


def test_inpaint_scores_clean_audio_and_a_click() -> None:
    seams = orc.hole_seams_s(seconds_to_audio_hole(3.0, 7.0).numpy())
    waves = [_vocoded(k, 50 + k) for k in range(8)]
    labels = list(syn.CLASS_NAMES)
    res = orc.inpaint_scores(waves, SR, labels, (3.0, 7.0), seams)
    assert res["class_accuracy"] == 1.0 and res["click_free"] == 1.0 and res["accuracy"] == 1.0, res
    assert res["seam_click_db_max"] < orc.CLICK_DB - 3  # clean seams sit well under the limit
    # a step in the waveform at a seam (what pasting two unrelated halves makes) is a click
    clicked = []
    for w in waves:
        w = w.copy()
        at = int(seams[0] * SR)
        w[at:] = -w[at:] + 0.3
        clicked.append(w)
    bad = orc.inpaint_scores(clicked, SR, labels, (3.0, 7.0), seams)
    assert bad["click_free"] == 0.0 and bad["accuracy"] == 0.0
    # the wrong class in the span is wrong even without a click
    swapped = orc.inpaint_scores(waves[::-1], SR, labels, (3.0, 7.0), seams)
    assert swapped["class_accuracy"] == 0.0


def test_joint_agreement() -> None:
    grey = np.full((256, 256, 3), 80, np.uint8)
    red = grey.copy()
    red[64:144, 64:144] = (224, 40, 40)
    tone = _vocoded(0, 3)
    res = orc.joint_agreement([red, red, grey], [tone, _vocoded(6, 4), tone], SR)
    assert res["image_classes"] == [0, 0, -1] and res["audio_classes"][:2] == [0, 6]
    assert res["agreement"] == pytest.approx(1 / 3)


def test_synthetic_clip_bytes_are_reproducible(tmp_path) -> None:
    for name in ("a", "b"):
        syn.make_clip(tmp_path / f"{name}.mp4", 5, 1234)
    digest = [hashlib.sha256((tmp_path / f"{n}.mp4").read_bytes()).hexdigest() for n in ("a", "b")]
    assert digest[0] == digest[1]
    syn.make_clip(tmp_path / "c.mp4", 5, 1235)
    assert hashlib.sha256((tmp_path / "c.mp4").read_bytes()).hexdigest() != digest[0]
