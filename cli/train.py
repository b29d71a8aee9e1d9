"""`avtok train`: parse flags, call avtok.model.train.train, print progress and a summary."""

from __future__ import annotations

from dataclasses import asdict

import click
from avtok.model.config import PRESETS, parse_overrides

from .options import EXISTING_DIR, NON_NEG_INT, OUT_DIR, POS_INT, POSITIVE, UNIT, Device


def _logger(_ctx, _param, value: str) -> str:
    if value == "wandb":
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise click.BadParameter('wandb is not installed: pip install "avtok[wandb]"')
    return value


@click.command()
@click.option("--shards", type=EXISTING_DIR, help="Token folder written by `avtok tokenize`.")
@click.option("--out", type=OUT_DIR, help="Run folder: checkpoints, metrics.jsonl, config.json.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="large", show_default=True,
              help="Model size (tiny for tests, base, large = MAGE-L).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a model config value, e.g. --set dec_depth=19 --set drop_rule=clamp.")
@click.option("--batch-size", type=POS_INT, default=256, show_default=True, help="Global batch (all GPUs).")
@click.option("--micro-batch", type=POS_INT, default=None, help="Per-GPU forward batch; the rest is accumulated.")
@click.option("--steps", type=POS_INT, default=None, help="Optimizer steps (overrides --epochs).")
@click.option("--epochs", type=POSITIVE, default=1000.0, show_default=True,
              help="Passes over the training clips (when --steps is not given).")
@click.option("--lr", type=POSITIVE, default=None, help="Absolute learning rate (default blr·batch/256).")
@click.option("--blr", type=POSITIVE, default=1.5e-4, show_default=True,
              help="Base learning rate per 256 samples.")
@click.option("--warmup-steps", type=NON_NEG_INT, default=None, help="Default: 2.5% of the steps.")
@click.option("--resume", is_flag=True,
              help="Continue the run in OUT from last.pt (or the newest complete checkpoint); from scratch if none.")
@click.option("--overwrite", is_flag=True, help="Start over in an OUT that holds a run, deleting its checkpoints and logs.")
@click.option("--keep-last", type=NON_NEG_INT, default=0, show_default=True,
              help="Keep only the newest N ckpt-*.pt (0 = all); the one last.pt names is never removed.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--grad-checkpoint", is_flag=True, help="Recompute block activations (less memory).")
@click.option("--ema", is_flag=True, help="Keep an EMA of the weights (used for eval and generate).")
@click.option("--ema-decay", type=UNIT, default=0.9999,
              show_default=True, help="EMA decay per step.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True,
              help="auto: bf16 on A100/H100/H200-class GPUs, fp16 + GradScaler on V100, fp32 on CPU.")
@click.option("--eval-every", type=POS_INT, default=1000, show_default=True, help="Held-out eval cadence (steps).")
@click.option("--ckpt-every", type=POS_INT, default=1000, show_default=True, help="Checkpoint cadence (steps).")
@click.option("--log-every", type=POS_INT, default=10, show_default=True, help="Metrics row cadence (steps).")
@click.option("--seed", type=NON_NEG_INT, default=0, show_default=True, help="Seeds init, data order, masks.")
@click.option("--device", default="auto", show_default=True, type=Device(extra=("auto",)),
              help="auto (this rank's GPU if any, else CPU), cpu, cuda or cuda:N.")
@click.option("--log", "log_to", type=click.Choice(["tensorboard", "wandb", "none"]), default="tensorboard",
              show_default=True, callback=_logger,
              help="Dashboard beside metrics.jsonl: TensorBoard events in OUT/tensorboard, or a W&B run in offline "
                   "mode in OUT/wandb (pip install \"avtok[wandb]\"; resumed with --resume).")
@click.option("--sample-every", type=NON_NEG_INT, default=1000, show_default=True,
              help="Every N steps generate image->audio and audio->image previews of held-out clips into "
                   "OUT/samples/step-NNNNNN/ and the dashboard (0 = never).")
@click.option("--preview-clips", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Held-out clips in each preview.")
@click.option("--peak-tflops", type=POSITIVE, default=None,
              help="Peak TFLOP/s for the MFU figure where the device is not known (e.g. a CPU).")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and parameter table, then exit.")
def train(shards, out, preset, sets, batch_size, micro_batch, steps, epochs, lr, blr, warmup_steps, resume, overwrite,
          keep_last, compile_, grad_checkpoint, ema, ema_decay, precision, eval_every, ckpt_every, log_every, seed,
          device, log_to, sample_every, preview_clips, peak_tflops, dry_run) -> None:
    """Train the audio-visual masked transformer on token shards (torchrun for several GPUs)."""
    from avtok.model.checkpoint import CheckpointError
    from avtok.model.config import preset as make_preset
    from avtok.model.files import FolderLockedError
    from avtok.model.token_shards import ShardError
    from avtok.model.train import TrainConfig, TrainingError
    from avtok.model.train import train as run_train

    try:
        overrides = parse_overrides(sets)
        make_preset(preset, **overrides)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--set") from None
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    cfg = TrainConfig(shards=shards or "", out=out or "", preset=preset, model_overrides=overrides,
                      batch_size=batch_size, micro_batch=micro_batch, steps=steps, epochs=epochs, lr=lr, blr=blr,
                      warmup_steps=warmup_steps, resume=resume, overwrite=overwrite, keep_last=keep_last, compile=compile_, grad_checkpoint=grad_checkpoint,
                      ema=ema, ema_decay=ema_decay, precision=precision, eval_every=eval_every,
                      ckpt_every=ckpt_every, log_every=log_every, seed=seed, device=device, log=log_to,
                      sample_every=sample_every, preview_clips=preview_clips, peak_tflops=peak_tflops)
    try:
        if dry_run:
            _dry_run(cfg)
            return
        if not shards or not out:
            raise click.UsageError("--shards and --out are required (except with --dry-run)")
        summary = run_train(cfg, log=click.echo)
    except (ShardError, TrainingError, CheckpointError, FolderLockedError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # disk full, permissions: one line, no traceback
        raise click.ClickException(f"{e.filename or cfg.out}: {e.strerror or e}") from None
    if summary.rank != 0:  # under torchrun only rank 0 reports
        return
    tail = f", i2a acc {summary.eval.i2a_acc:.3f}" if summary.eval else ""
    loss = "n/a" if summary.final_loss is None else f"{summary.final_loss:.4f}"
    click.echo(f"trained {summary.step} steps, final loss {loss}{tail} -> {summary.checkpoint}")


def _dry_run(cfg) -> None:
    from avtok.model.config import preset
    from avtok.model.token_shards import load_token_index
    from avtok.model.transformer import AVTransformer, flops_per_sample, num_params, param_groups

    books = {}
    if cfg.shards:
        index = load_token_index(cfg.shards, verify_checksums=False)
        books = {"image_codebook": int(index["image_codebook"]), "audio_codebook": int(index["audio_codebook"])}
    mcfg = preset(cfg.preset, grad_checkpoint=cfg.grad_checkpoint, **{**books, **cfg.model_overrides})
    with _meta_device():
        model = AVTransformer(mcfg)
    click.echo("model config:")
    for k, v in mcfg.to_dict().items():
        click.echo(f"  {k}: {v}")
    click.echo("training config:")
    for k, v in asdict(cfg).items():
        if k != "model_overrides":
            click.echo(f"  {k}: {v}")
    lr = cfg.lr if cfg.lr is not None else cfg.blr * cfg.batch_size / 256
    click.echo(f"  resolved lr: {lr:.4g}")
    click.echo(f"  training FLOPs per sample: {flops_per_sample(mcfg) / 1e12:.4f} TFLOP")
    click.echo("parameters:")
    for name, n in param_groups(model):
        click.echo(f"  {name:<24}{n:>14,}")
    total = num_params(model)
    click.echo(f"total {total:,} ({total / 1e6:.1f}M)")


def _meta_device():
    import torch

    return torch.device("meta")  # no memory for the 409M weights just to count them
