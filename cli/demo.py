"""`avtok demo`: the whole chain on a synthetic set made on the spot, on CPU, in minutes."""

from __future__ import annotations

import click

from .options import NON_NEGATIVE, OUT_DIR, POS_INT


@click.command("demo")
@click.option("--out", default="avtok_demo", show_default=True, type=OUT_DIR,
              help="Working folder; a re-run reuses its finished stages. The report lands in OUT/report/.")
@click.option("--train-steps", default=None, type=POS_INT, help="Optimizer steps of the tiny model.")
@click.option("--batch-size", default=None, type=POS_INT)
@click.option("--clips-per-class", default=None, type=click.IntRange(min=2), help="Clips per class (8 classes).")
@click.option("--cfg", default=None, type=NON_NEGATIVE, help="Guidance scale of the 'CFG on' generations.")
@click.option("--workers", default=None, type=POS_INT, help="Parallel clip makers / Ray workers.")
@click.option("--threads", default=None, type=POS_INT, help="torch threads (default: torch's).")
def demo(out, train_steps, batch_size, clips_per_class, cfg, workers, threads) -> None:
    """Make 8 classes of synthetic 10 s videos (a coloured square whose colour and stripes go with a
    tone's pitch and rhythm), extract them with Ray, fit patch k-means tokenizers, tokenize, train the
    tiny transformer, then turn every held-out image into sound (with and without classifier-free
    guidance) and score the sound with an analytic oracle (FFT pitch + 1 Hz beat of that band).

    Writes OUT/report/: wav/, png/ (frame + real and generated mels), loss_curve.png, metrics.json;
    prints a summary table.
    """
    from avtok.pipeline.demo import DemoOptions, run_demo, summary_table

    opts = DemoOptions(out=out)
    for name, value in (("train_steps", train_steps), ("batch_size", batch_size),
                        ("clips_per_class", clips_per_class), ("cfg", cfg), ("workers", workers),
                        ("threads", threads)):
        if value is not None:
            setattr(opts, name, value)
    try:
        metrics = run_demo(opts, say=lambda msg: click.echo(msg, err=True))
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary_table(metrics))
    click.echo(f"report: {out}/report (metrics.json, wav/, png/, loss_curve.png)")
