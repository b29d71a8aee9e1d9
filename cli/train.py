"""`avtok train`: parse flags, call avtok.model.train.train, print progress and a summary."""

from __future__ import annotations

import ast
from dataclasses import asdict, fields

import click
from avtok.model.config import PRESETS, AVConfig

from .options import EXISTING_DIR, NON_NEG_INT, OUT_DIR, POS_INT, POSITIVE, SEED, UNIT, Device


def _parse_sets(items: tuple[str, ...]) -> dict:
    known = {f.name for f in fields(AVConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE with KEY one of {sorted(known)}", param_hint="--set")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # plain strings such as drop_rule=clamp
    return out


@click.command()
@click.option("--shards", type=EXISTING_DIR, help="Token folder written by `avtok tokenize`.")
@click.option("--out", type=OUT_DIR, help="Run folder: checkpoints, metrics.jsonl, config.json.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="large", show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a model config value, e.g. --set dec_depth=19 --set drop_rule=clamp.")
@click.option("--batch-size", type=POS_INT, default=256, show_default=True, help="Global batch (all GPUs).")
@click.option("--micro-batch", type=POS_INT, default=None, help="Per-GPU forward batch; the rest is accumulated.")
@click.option("--steps", type=POS_INT, default=None, help="Optimizer steps (overrides --epochs).")
@click.option("--epochs", type=POSITIVE, default=1000.0, show_default=True)
@click.option("--lr", type=POSITIVE, default=None, help="Absolute learning rate (default blr·batch/256).")
@click.option("--blr", type=POSITIVE, default=1.5e-4, show_default=True)
@click.option("--warmup-steps", type=NON_NEG_INT, default=None, help="Default: 2.5% of the steps.")
@click.option("--resume", is_flag=True, help="Continue exactly from OUT/last.pt (if present).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--grad-checkpoint", is_flag=True, help="Recompute block activations (less memory).")
@click.option("--ema", is_flag=True, help="Keep an EMA of the weights (used for eval and generate).")
@click.option("--ema-decay", type=UNIT, default=0.9999, show_default=True)
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True)
@click.option("--eval-every", type=POS_INT, default=1000, show_default=True)
@click.option("--ckpt-every", type=POS_INT, default=1000, show_default=True)
@click.option("--log-every", type=POS_INT, default=10, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, type=Device(extra=("auto",)),
              help="auto (cuda when visible, else cpu), cpu, cuda, cuda:N, mps.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and parameter table, then exit.")
def train(shards, out, preset, sets, batch_size, micro_batch, steps, epochs, lr, blr, warmup_steps, resume,
          compile_, grad_checkpoint, ema, ema_decay, precision, eval_every, ckpt_every, log_every, seed, device,
          dry_run) -> None:
    """Train the audio-visual masked transformer on token shards (torchrun for several GPUs)."""
    from avtok.model.checkpoint import CheckpointError
    from avtok.model.token_shards import ShardError
    from avtok.model.train import TrainConfig, TrainingError
    from avtok.model.train import train as run_train

    overrides = _parse_sets(sets)
    cfg = TrainConfig(shards=shards or "", out=out or "", preset=preset, model_overrides=overrides,
                      batch_size=batch_size, micro_batch=micro_batch, steps=steps, epochs=epochs, lr=lr, blr=blr,
                      warmup_steps=warmup_steps, resume=resume, compile=compile_, grad_checkpoint=grad_checkpoint,
                      ema=ema, ema_decay=ema_decay, precision=precision, eval_every=eval_every,
                      ckpt_every=ckpt_every, log_every=log_every, seed=seed, device=device)
    try:
        if dry_run:
            _dry_run(cfg)
            return
        if not shards or not out:
            raise click.UsageError("--shards and --out are required (except with --dry-run)")
        summary = run_train(cfg, log=click.echo)
    except (ShardError, TrainingError, CheckpointError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    if summary["rank"] != 0:  # under torchrun only rank 0 reports
        return
    ev = summary["eval"] or {}
    tail = f", i2a acc {ev['i2a_acc']:.3f}" if ev else ""
    click.echo(f"trained {summary['steps']} steps, final loss {summary['final_loss']:.4f}{tail} -> {summary['checkpoint']}")


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
