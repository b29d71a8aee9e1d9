"""Small real avtok folders for the inspect and app tests, made with the commands themselves.

    folders = make_folders(tmp)   # {"videos", "extracted", "kmeans", "tokens", "manifest"}

Six ffmpeg-made clips with labels and splits (one 4 s clip, so one sample carries warnings) plus one
junk file (an errors.parquet row), extracted in-process with --keep-audio, a 16-code patch k-means
fitted on them and the clips tokenized. Takes a few seconds.
"""

from __future__ import annotations

import csv
from pathlib import Path

from media import make_clip, make_junk

CLIPS = [  # name, picture source, audio, duration, label, split
    ("tone_a", "testsrc2", "sine", 10.0, "tone", "train"),
    ("tone_b", "mandelbrot", "sine", 10.0, "tone", "train"),
    ("noise_a", "testsrc2", "noise", 10.0, "noise", "train"),
    ("noise_b", "mandelbrot", "noise", 10.0, "noise", "test"),
    ("short", "seconds", "sine", 4.0, "tone", "train"),
    ("quiet", "testsrc2", "noise", 10.0, "noise", "test"),
]


def cli(args: list[str]) -> str:
    """Run an avtok command in-process; assert it succeeded; return its output."""
    from avtok.cli.main import cli as main
    from click.testing import CliRunner

    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, (args, res.output, res.exception)
    return res.output


def make_folders(root: Path) -> dict[str, Path]:
    videos = root / "videos"
    rows = []
    for name, source, audio, duration, label, split in CLIPS:
        path = make_clip(videos / f"{name}.mp4", duration=duration, size=(320, 240), fps=10, source=source,
                         audio=audio)
        rows.append((name, path, label, split))
    rows.append(("junk", make_junk(videos / "junk.mp4"), "noise", "train"))
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "path", "start_s", "label", "split"])
        w.writerows([(vid, str(p), 0, label, split) for vid, p, label, split in rows])
    out = {"videos": videos, "manifest": manifest, "extracted": root / "extracted",
           "kmeans": root / "kmeans.safetensors", "tokens": root / "tokens"}
    cli(["extract", "--videos", manifest, "--out", out["extracted"], "--no-ray", "--keep-audio", "--shard-size", 4])
    cli(["tokenizer", "fit-kmeans", "--extracted", out["extracted"], "--out", out["kmeans"], "--k", 16,
         "--clips", 6, "--iters", 2, "--max-points", 2048])
    cli(["tokenize", "--extracted", out["extracted"], "--out", out["tokens"], "--image-tokenizer", out["kmeans"],
         "--audio-tokenizer", out["kmeans"], "--no-ray", "--device", "cpu"])
    return out


_BUILT: dict[str, dict[str, Path]] = {}


def shared_folders(tmp_path_factory) -> dict[str, Path]:
    """make_folders once per test session (test_inspect and test_app both use them), plus a tiny checkpoint."""
    if "folders" not in _BUILT:
        root = tmp_path_factory.mktemp("av_folders")
        _BUILT["folders"] = make_folders(root)
    return _BUILT["folders"]


def tiny_checkpoint(folders: dict[str, Path]) -> Path:
    """A `tiny` model trained 3 steps on the shared token folder (the app test's checkpoint)."""
    if "ckpt" not in _BUILT:
        from avtok.model.train import TrainConfig, train

        run = folders["tokens"].parent / "run"
        summary = train(TrainConfig(shards=str(folders["tokens"]), out=str(run), preset="tiny", batch_size=4, steps=3,
                                    device="cpu", eval_every=10**6, eval_samples=8, ckpt_every=3,
                                    log_every=100), log=lambda _m: None)
        _BUILT["ckpt"] = {"ckpt": Path(summary.checkpoint)}
    return _BUILT["ckpt"]["ckpt"]
