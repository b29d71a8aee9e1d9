"""`avtok extract`: decode videos into 10 frames + a 10 s mel per clip (WebDataset shards, on Ray)."""

from __future__ import annotations

import click

from .options import NON_NEG_INT, OUT_DIR, POS_INT
from .shard_progress import finish, run_sharded


@click.command("extract")
@click.option("--videos", required=True,
              help="A folder of videos (searched recursively), a quoted glob, or a manifest (.csv/.parquet).")
@click.option("--out", required=True, type=OUT_DIR,
              help="Output folder: shard-NNNNNN.tar + .stats.json, errors.parquet, index.json.")
@click.option("--shard-size", default=1000, show_default=True, type=POS_INT,
              help="Manifest rows per shard (the unit of work, retry and resumption).")
@click.option("--backend", default="pyav", show_default=True, type=click.Choice(["pyav", "decord", "ffmpeg"]),
              help="Decoder: pyav (in-process, fastest), decord (frames; audio via pyav), ffmpeg (subprocesses).")
@click.option("--workers", default=None, type=POS_INT,
              help="Parallel decode workers (one CPU each). Default: every CPU of the local Ray / the cluster.")
@click.option("--address", default=None,
              help="Ray cluster to run on ('auto' or host:port of a `ray start --head`; an unreachable one fails "
                   "within seconds). Default: a private local Ray.")
@click.option("--keep-audio", is_flag=True, help="Also store the 10 s 22050 Hz mono waveform (audio.flac) per clip.")
@click.option("--strict", is_flag=True,
              help="Treat clips shorter than 10 s or without audio as errors instead of padding them with a warning.")
@click.option("--max-retries", default=2, show_default=True, type=NON_NEG_INT,
              help="Ray retries of a shard whose worker crashed or raised.")
@click.option("--no-ray", is_flag=True, help="Run the shards one by one in this process (debugging; same code).")
@click.option("--overwrite", is_flag=True,
              help="Write into an --out that holds other files, or replace an extraction made from another "
                   "manifest or with other options (its shards are deleted first).")
def extract(videos, out, shard_size, backend, workers, address, keep_audio, strict, max_retries, no_ray,
            overwrite) -> None:
    """Decode every video into 10 frames (256x256, frame i shown at start+i+0.5 s) and a SpecVQGAN
    spec01 mel (80x848), written as numbered WebDataset tars in --out.

    Re-running the same command finishes an interrupted job: finished shards (those with a
    .stats.json) are skipped, unfinished ones are redone; nothing is duplicated. Videos that cannot
    be decoded are listed in errors.parquet; the command still exits 0. Exit code 3: some shards
    failed after their retries (re-run to retry them). One run per --out at a time.
    """
    from avtok.pipeline.extract import run_extract
    summary = run_sharded(
        "extract", lambda s: (s.videos, s.errors),
        lambda progress, on_plan: run_extract(videos, out, shard_size=shard_size, backend=backend, workers=workers,
                          address=address, keep_audio=keep_audio, strict=strict, max_retries=max_retries,
                          progress=progress, in_process=no_ray, on_plan=on_plan, overwrite=overwrite))
    finish(summary)
