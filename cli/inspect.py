"""`avtok inspect`: contact sheet, sample wavs and statistics of an extracted or token folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .errors import user_error
from .options import OUT_DIR


@click.command("inspect")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--samples", default=4, show_default=True, type=click.IntRange(1, 1000),
              help="How many clips (the first in stored order) to draw on the sheet and write as wavs.")
@click.option("--out", type=OUT_DIR,
              help="Folder for contact_sheet.png, stats.json and wav/ (default: ./<folder name>-inspect).")
@click.option("--vocoder", type=click.Path(exists=True, dir_okay=False),
              help="MelGAN/HiFi-GAN file for mels without stored audio; default a fast Griffin-Lim.")
@click.option("--image-tokenizer", type=click.Path(exists=True, dir_okay=False),
              help="Token folders: the image tokenizer file, if it moved since tokenize.")
@click.option("--audio-tokenizer", type=click.Path(exists=True, dir_okay=False),
              help="Token folders: the audio tokenizer file, if it moved since tokenize.")
def inspect(path, samples, out, vocoder, image_tokenizer, audio_tokenizer) -> None:
    """Look at what `avtok extract` or `avtok tokenize` wrote in PATH: a contact sheet (frames and mel per
    clip; token folders are decoded with their tokenizers), wavs, and statistics (printed and stats.json)."""
    from avtok.pipeline.inspect import inspect_folder, preview_vocoder, write_inspection
    from tqdm import tqdm

    out = Path(out) if out else Path(f"{Path(path).resolve().name}-inspect")
    bars: list[tqdm] = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="shards", unit="shard", leave=False))
        bars[0].update(done - bars[0].n)

    try:
        ins = inspect_folder(path, samples=samples, vocoder=preview_vocoder(vocoder),
                             image_tokenizer=image_tokenizer, audio_tokenizer=audio_tokenizer, progress=progress)
        written = write_inspection(ins, out)
    except (ValueError, OSError) as e:
        raise user_error(e) from None
    finally:
        for bar in bars:
            bar.close()
    click.echo(json.dumps(ins.stats, indent=2))
    click.echo(f"{ins.kind} folder {path}: {ins.stats['clips']} clips; sheet of {len(ins.shown)} -> {written[0]}, "
               f"{len(written) - 2} wavs in {out / 'wav'}, stats in {written[1]}")
