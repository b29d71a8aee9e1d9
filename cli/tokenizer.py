"""`avtok tokenizer ...`: fit tokenizers on the data at hand (patch k-means)."""

from __future__ import annotations

import click

from .options import EXISTING_DIR, NON_NEG_INT, OUT_FILE, POS_INT, SEED


@click.group("tokenizer")
def tokenizer() -> None:
    """Fit or inspect tokenizers."""


@tokenizer.command("fit-kmeans")
@click.option("--extracted", required=True, type=EXISTING_DIR,
              help="Output folder of `avtok extract`.")
@click.option("--out", required=True, type=OUT_FILE,
              help="The .safetensors file to write (holds the image and the audio codebook).")
@click.option("--k", "k", default=1024, show_default=True, type=click.IntRange(2, 65536),
              help="Codebook size of each modality.")
@click.option("--clips", default=200, show_default=True, type=POS_INT,
              help="Clips to sample (all 10 frames and the mel of each).")
@click.option("--iters", default=8, show_default=True, type=NON_NEG_INT, help="Lloyd iterations.")
@click.option("--max-points", default=16384, show_default=True, type=POS_INT,
              help="Patches per modality the k-means runs on (a random sample).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the clip sample and the k-means.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def fit_kmeans(extracted, out, k, clips, iters, max_points, seed, overwrite) -> None:
    """Fit 16x16-patch k-means codebooks for frames and mels (k-means++ then Lloyd steps) on a
    sample of extracted clips; tokenize with --image-tokenizer/--audio-tokenizer FILE."""
    from pathlib import Path

    from avtok.pipeline.fit_kmeans import fit_kmeans_from_extracted

    if Path(out).exists() and not overwrite:
        raise click.ClickException(f"--out {out}: exists; pass --overwrite to replace it")
    try:
        summary = fit_kmeans_from_extracted(extracted, out, k=k, clips=clips, seed=seed, iters=iters,
                                            max_points=max_points)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or out}: {exc.strerror or exc}") from None
    click.echo(summary.line())
