"""`avtok demo`: the whole chain on a synthetic set made on the spot, on CPU, in minutes."""

from __future__ import annotations

import click

from .options import (
    CFG_SCHEDULE,
    CONFIDENCE,
    JOINT_ORDER,
    NON_NEGATIVE,
    OUT_DIR,
    POS_INT,
    SEED,
    TOKEN_TEMPERATURE,
    TOP_P,
)


@click.command("demo")
@click.option("--out", default="avtok_demo", show_default=True, type=OUT_DIR,
              help="Working folder; a re-run reuses its finished stages. The report lands in OUT/report/.")
@click.option("--quick", is_flag=True, help="The quick configuration (CI): 8 clips a class, 100 steps, "
              "CFG scored at 0 and --cfg only.")
@click.option("--seed", default=None, type=SEED, help="Seed of the data, codebooks, training and sampling.")
@click.option("--train-steps", default=None, type=POS_INT, help="Optimizer steps of the tiny model.")
@click.option("--batch-size", default=None, type=POS_INT)
@click.option("--clips-per-class", default=None, type=click.IntRange(min=2), help="Clips per class (8 classes; default 40, of which the last 5 are held out, 2 with --quick).")
@click.option("--cfg", default=None, type=NON_NEGATIVE, help="Guidance scale of the 'CFG on' generations (default 1).")
@click.option("--cfg-schedule", default=None, type=CFG_SCHEDULE,
              help="Guidance over the decoding steps: constant w, or w·(t+1)/T.")
@click.option("--top-p", default=None, type=TOP_P,
              help="Keep every draw, guided or not, to the top-p nucleus of the conditional (default 0.7; 1 = the paper).")
@click.option("--token-temperature", default=None, type=TOKEN_TEMPERATURE,
              help="Draw tokens given the condition from softmax(logits / T) (default 0.1; 1 = the paper). Joint "
                   "pictures are drawn at 1.")
@click.option("--joint-order", default=None, type=JOINT_ORDER,
              help="Joint generation on one schedule (the paper) or picture first, then sound (default image-first).")
@click.option("--confidence", default=None, type=CONFIDENCE,
              help="Reveal the draws in the order of their probability under the conditional model (default "
                   "conditional) or under the guided distribution (guided, the paper).")
@click.option("--workers", default=None, type=POS_INT, help="Parallel clip makers (ffmpeg processes; default 2).")
@click.option("--threads", default=None, type=POS_INT, help="torch threads (default 2; results are bit-identical for one thread count).")
def demo(out, quick, seed, train_steps, batch_size, clips_per_class, cfg, cfg_schedule, top_p, token_temperature,
         joint_order, confidence, workers, threads) -> None:
    """Make 8 classes of synthetic 10 s videos (a coloured square whose colour and stripes go with a
    tone's pitch and rhythm), extract them, fit patch k-means tokenizers, tokenize, train the
    tiny transformer, then score all four tasks on the held-out clips with analytic oracles:
    image→audio and audio→image (with and without classifier-free guidance, plus a sweep of w),
    joint generation (do picture and sound name the same class) and audio inpainting of 3-7 s.

    Writes OUT/report/: wav/, png/, loss_curve.png, metrics.json; prints a summary table. The same
    command, seed and --threads give the same metrics, bit for bit, on one machine.
    """
    from avtok.pipeline.demo import DemoOptions, check_options, quick_options, run_demo, summary_table

    opts = quick_options(out=out) if quick else DemoOptions(out=out)
    for name, value in (("seed", seed), ("train_steps", train_steps), ("batch_size", batch_size),
                        ("clips_per_class", clips_per_class), ("cfg", cfg), ("cfg_schedule", cfg_schedule),
                        ("top_p", top_p), ("token_temperature", token_temperature), ("joint_order", joint_order),
                        ("confidence", confidence),
                        ("workers", workers), ("threads", threads)):
        if value is not None:
            setattr(opts, name, value)
    try:
        check_options(opts)
    except ValueError as exc:  # a bad value, refused before anything is made (exit 2)
        raise click.BadParameter(str(exc), param_hint="'--clips-per-class'") from exc
    try:
        metrics = run_demo(opts, say=lambda msg: click.echo(msg, err=True))
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary_table(metrics))
    click.echo(f"report: {out}/report (metrics.json, wav/, png/, loss_curve.png)")
