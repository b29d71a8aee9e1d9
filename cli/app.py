"""`avtok app`: serve a Gradio page for a trained checkpoint (needs the `avtok[app]` extra)."""

from __future__ import annotations

import click

from .errors import user_error
from .options import EXISTING_DIR, EXISTING_FILE, Device

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command("app")
@click.option("--checkpoint", required=True, type=EXISTING_FILE, help="Trained checkpoint (runs/x/last.pt).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. The default is reachable only from this machine; 0.0.0.0 opens it to the network.")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535), help="TCP port to listen on.")
@click.option("--shards", type=EXISTING_DIR,
              help="Token folder of the checkpoint's tokenizers: a few of its clips become example inputs.")
@click.option("--examples", "n_examples", default=4, show_default=True, type=click.IntRange(1, 32),
              help="How many example clips to take from --shards.")
@click.option("--device", default="cpu", show_default=True, type=Device(), help="cpu, cuda, cuda:1 ...")
@click.option("--vocoder", type=EXISTING_FILE,
              help="SpecVQGAN MelGAN (best_netG.pt) or HiFi-GAN V1 generator file; default Griffin-Lim.")
@click.option("--fast-vocoder", is_flag=True,
              help="Griffin-Lim from the clamped pseudo-inverse of the mel basis (no NNLS): ~3x faster on CPU, rougher.")
@click.option("--image-tokenizer", type=EXISTING_FILE, help="Image tokenizer file, if it moved.")
@click.option("--audio-tokenizer", type=EXISTING_FILE, help="Audio tokenizer file, if it moved.")
def app(checkpoint, host, port, shards, n_examples, device, vocoder, fast_vocoder, image_tokenizer, audio_tokenizer) -> None:
    """Serve a page for all four tasks (image → sound, sound → image, joint, inpainting) of a checkpoint."""
    try:
        import gradio  # noqa: F401 - only to say how to get it
    except ImportError:
        raise click.ClickException('avtok app needs Gradio: pip install "avtok[app]"') from None
    from avtok.model.generate import load_bundle
    from avtok.pipeline.app import build_app, examples_folder, make_examples
    from avtok.pipeline.inspect import preview_vocoder

    try:
        bundle = load_bundle(checkpoint, image_tokenizer, audio_tokenizer, device=device)
        voc = preview_vocoder(vocoder, bundle.device, fast=fast_vocoder)
        folder = examples_folder() if shards else None
        examples = make_examples(bundle, voc, shards, folder, count=n_examples) if shards else []
    except (ValueError, OSError) as e:
        raise user_error(e) from None
    if host not in LOOPBACK:
        click.echo(f"warning: listening on {host}: anyone who can reach this machine can use the page", err=True)
    demo = build_app(bundle, voc, examples)
    try:
        demo.queue(default_concurrency_limit=1).launch(
            server_name=host, server_port=port, share=False, show_error=True, inbrowser=False,
            allowed_paths=[str(folder)] if folder else None)
    except OSError as e:  # port taken, address not ours
        why = "the port is taken; pass another --port" if "empty port" in str(e) else str(e).strip().splitlines()[0]
        raise click.ClickException(f"cannot listen on {host}:{port}: {why}") from None
