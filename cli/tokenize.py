"""`avtok tokenize`: extracted shards → Parquet token shards with two tokenizers (Ray actors)."""

from __future__ import annotations

import click

from .options import EXISTING_DIR, EXISTING_FILE, NON_NEG_INT, OUT_DIR, POS_INT, Device
from .shard_progress import finish, run_sharded

KINDS = ["taming", "specvqgan", "patch-kmeans"]


@click.command("tokenize")
@click.option("--extracted", required=True, type=EXISTING_DIR,
              help="Output folder of `avtok extract`.")
@click.option("--out", required=True, type=OUT_DIR,
              help="Output folder: tokens-NNNNNN.parquet + .stats.json, plan.json, index.json.")
@click.option("--image-tokenizer", "--image-vqgan", "image_tokenizer", required=True, type=EXISTING_FILE,
              help="Frame tokenizer: taming vqgan_imagenet_f16_1024 last.ckpt, or a patch k-means .safetensors.")
@click.option("--audio-tokenizer", "--audio-vqgan", "audio_tokenizer", required=True, type=EXISTING_FILE,
              help="Mel tokenizer: SpecVQGAN VGGSound codebook .ckpt, or a patch k-means .safetensors.")
@click.option("--image-kind", type=click.Choice(KINDS), default=None,
              help="Default: patch-kmeans for .safetensors, else taming.")
@click.option("--audio-kind", type=click.Choice(KINDS), default=None,
              help="Default: patch-kmeans for .safetensors, else specvqgan.")
@click.option("--device", default=None, type=Device(indexed=False, mps=False),
              help="Default: cuda when a GPU is visible (one actor per GPU), else cpu.")
@click.option("--batch-size", default=None, type=POS_INT,
              help="Frames (or mels) per forward pass. Default: 64 on GPU, 8 on CPU.")
@click.option("--fast", is_flag=True,
              help="fp16 (GPU) / bf16 (CPU) convolutions with an fp32 codebook search; default is exact fp32.")
@click.option("--workers", default=None, type=POS_INT,
              help="Actors. Default: one per GPU, or one CPU actor using every core.")
@click.option("--address", default=None,
              help="Ray cluster ('auto' or host:port; an unreachable one fails within seconds). "
                   "Default: a private local Ray.")
@click.option("--max-retries", default=2, show_default=True, type=NON_NEG_INT,
              help="Retries of a shard whose worker crashed or raised.")
@click.option("--no-ray", is_flag=True, help="Run the shards one by one in this process (debugging; same code).")
@click.option("--allow-incomplete", is_flag=True,
              help="Tokenize an extraction that has failed shards (recorded in index.json as incomplete input).")
@click.option("--overwrite", is_flag=True,
              help="Write into an --out that holds other files, or replace tokens made with other tokenizers "
                   "or from another extraction (its token shards are deleted first).")
def tokenize(extracted, out, image_tokenizer, audio_tokenizer, image_kind, audio_kind, device, batch_size, fast,
             workers, address, max_retries, no_ray, allow_incomplete, overwrite) -> None:
    """Turn every extracted shard into a Parquet token shard (10x256 image tokens + 265 audio tokens
    per clip, uint16), and write index.json with the tokenizers' fingerprints.

    Re-running finishes an interrupted job: shards with a .stats.json are skipped, and token shards
    whose extracted shard changed since (sha256) are redone. Extracted shards made with other mel
    parameters are refused, and so is a --out made with other tokenizers, and an extraction with
    failed shards (unless --allow-incomplete). Exit code 3: some shards failed (re-run to retry).
    """
    from avtok.pipeline.tokenize import run_tokenize
    summary = run_sharded(
        "tokenize", lambda s: (s.clips + s.errors, s.errors),
        lambda progress, on_plan: run_tokenize(extracted, out, image_tokenizer, audio_tokenizer, image_kind=image_kind,
                           audio_kind=audio_kind, device=device, batch_size=batch_size, fast=fast,
                           workers=workers, address=address, max_retries=max_retries, progress=progress,
                           on_plan=on_plan, in_process=no_ray, allow_incomplete=allow_incomplete,
                           overwrite=overwrite))
    finish(summary)
