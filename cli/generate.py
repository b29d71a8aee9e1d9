"""`avtok generate`: image->audio, audio->image, joint generation and image-guided audio inpainting."""

from __future__ import annotations

import click

from .options import (
    CFG_SCHEDULE,
    CONFIDENCE,
    EXISTING_FILE,
    JOINT_ORDER,
    NON_NEGATIVE,
    OUT_FILE,
    SEED,
    TOKEN_TEMPERATURE,
    TOP_P,
    Device,
)


@click.command("generate")
@click.option("--checkpoint", required=True, type=EXISTING_FILE, help="Trained checkpoint (runs/x/last.pt).")
@click.option("--image", type=EXISTING_FILE, help="Condition image: generate its audio.")
@click.option("--audio", type=EXISTING_FILE, help="Condition audio: generate an image (10 s used).")
@click.option("--joint", is_flag=True, help="Generate image and audio together, from nothing.")
@click.option("--inpaint", "hole", metavar="START-END",
              help="Regenerate seconds START-END of --audio, guided by --image (e.g. 3.0-6.0; 8-10 outpaints).")
@click.option("--out", type=OUT_FILE,
              help="Output file (wav, or png for --audio); default beside the input. A png goes beside a wav.")
@click.option("--overwrite", is_flag=True, help="Replace output files that exist already (default: refuse).")
@click.option("--num-samples", default=1, show_default=True, type=click.IntRange(1, 1024))
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--steps", default=30, show_default=True, type=click.IntRange(1, 1000), help="Decoding steps T.")
@click.option("--cfg", default=3.0, show_default=True, type=NON_NEGATIVE,
              help="Guidance w in c + w·(c - u); 0 turns it off.")
@click.option("--cfg-schedule", default="constant", show_default=True, type=CFG_SCHEDULE,
              help="linear ramps w·(t+1)/T.")
@click.option("--temperature", default=4.5, show_default=True, type=NON_NEGATIVE,
              help="Choice temperature tau of the Gumbel noise on the confidence.")
@click.option("--top-p", default=1.0, show_default=True, type=TOP_P,
              help="Keep every draw (guided or not) to the top-p nucleus of the conditional distribution; "
                   "1 = the paper's sampler (the demo uses 0.7).")
@click.option("--token-temperature", default=1.0, show_default=True, type=TOKEN_TEMPERATURE,
              help="Draw tokens given the condition from softmax(logits / T); below 1 sharpens them (the demo "
                   "uses 0.1); 1 = the paper's sampler. A --joint picture is always drawn at 1.")
@click.option("--joint-order", default="together", show_default=True, type=JOINT_ORDER,
              help="--joint only: one schedule over picture and sound (the paper), or the picture first and "
                   "then the sound given it.")
@click.option("--confidence", default="guided", show_default=True, type=CONFIDENCE,
              help="Reveal order: rank the draws by their probability under the guided distribution (the paper) "
                   "or under the conditional one (the demo: guidance picks tokens, not when they are revealed).")
@click.option("--device", default="cpu", show_default=True, type=Device(), help="cpu, cuda, cuda:1, mps ...")
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="Transformer autocast; auto = bf16 (fp16 on pre-Ampere) on CUDA, fp32 elsewhere.")
@click.option("--vocoder", type=EXISTING_FILE,
              help="SpecVQGAN MelGAN (best_netG.pt) or HiFi-GAN V1 generator file; default Griffin-Lim.")
@click.option("--image-tokenizer", type=EXISTING_FILE, help="Image tokenizer file, if it moved.")
@click.option("--audio-tokenizer", type=EXISTING_FILE, help="Audio tokenizer file, if it moved.")
def generate(checkpoint, image, audio, joint, hole, out, overwrite, num_samples, seed, steps, cfg, cfg_schedule, temperature,
             top_p, token_temperature, joint_order, confidence, device, precision, vocoder, image_tokenizer,
             audio_tokenizer) -> None:
    """Generate audio from an image (and the other directions) with a trained checkpoint.

    Output files that exist already are refused (nothing is replaced) unless --overwrite."""
    if hole is not None:
        task = "inpaint"
    elif joint:
        task = "joint"
    elif image is not None and audio is None:
        task = "image2audio"
    elif audio is not None and image is None:
        task = "audio2image"
    else:
        raise click.UsageError("give --image, --audio, --joint, or --inpaint START-END with --audio and --image")
    if joint and (image or audio):
        raise click.UsageError("--joint takes no --image/--audio")

    from avtok.pipeline.generate import run_generate
    from tqdm import tqdm

    bars: list[tqdm] = []  # made on the first step, so a failure before sampling prints only its error

    def progress(step: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=task, unit="step", leave=False))
        bars[0].update(step - bars[0].n)

    try:
        written = run_generate(task, checkpoint, image=image, audio=audio, hole=hole, out=out,
                               num_samples=num_samples, seed=seed, steps=steps, cfg=cfg, cfg_schedule=cfg_schedule,
                               temperature=temperature, device=device, precision=precision, vocoder=vocoder,
                               image_tokenizer=image_tokenizer, audio_tokenizer=audio_tokenizer,
                               overwrite=overwrite, progress=progress, top_p=top_p, joint_order=joint_order,
                               token_temperature=token_temperature, confidence=confidence)
    except (ValueError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise click.ClickException(msg) from None
    finally:
        for bar in bars:
            bar.close()
    click.echo(f"{task}: {num_samples} sample(s), {steps} steps, cfg {cfg:g} ({cfg_schedule}), seed {seed} -> "
               + ", ".join(str(p) for p in written))
