"""`avtok eval`: token-level and waveform metrics of a checkpoint on a token split."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from .options import EXISTING_DIR, EXISTING_FILE, NON_NEGATIVE, OUT_DIR, OUT_FILE, POS_INT, Device, FloatList


def _device(_ctx, _param, value: str) -> str:
    from avtok.model.precision import DeviceError, resolve_device

    try:
        return str(resolve_device(value))
    except DeviceError as e:
        raise click.BadParameter(str(e)) from None


@click.command("eval")
@click.option("--checkpoint", required=True, type=EXISTING_FILE, help="avtok checkpoint (.pt).")
@click.option("--shards", required=True, type=EXISTING_DIR, help="Token folder (avtok tokenize).")
@click.option("--split", default="test", show_default=True, help="Split of the token folder to score.")
@click.option("--out", required=True, type=OUT_FILE, help="Result JSON; a .md table is written beside it.")
@click.option("--limit", type=click.IntRange(min=2), default=None, help="Only the first N clips of the split.")
@click.option("--cfg-scales", default="0,1,2,3,5", show_default=True, type=FloatList(min=0.0), help="Guidance scales of the CFG sweep.")
@click.option("--seeds", default=3, show_default=True, type=POS_INT, help="Sampler seeds per scale.")
@click.option("--steps", default=30, show_default=True, type=POS_INT, help="MaskGIT steps.")
@click.option("--batch", default=32, show_default=True, type=POS_INT, help="Clips per forward pass.")
@click.option("--cfg", default=3.0, show_default=True, type=NON_NEGATIVE, help="Guidance of the generated waveforms.")
@click.option("--no-waveforms", is_flag=True, help="Token metrics only (no decoding, vocoder or audio nets).")
@click.option("--audio-tokenizer", type=EXISTING_FILE, default=None,
              help="Audio tokenizer file, if it moved since tokenize (checked by fingerprint).")
@click.option("--vocoder", type=EXISTING_FILE, default=None,
              help="SpecVQGAN MelGAN generator; default Griffin-Lim.")
@click.option("--extracted", type=EXISTING_DIR, default=None,
              help="Extracted folder made with --keep-audio: reference audio (else the tokenizer reconstruction).")
@click.option("--cnn14-ckpt", type=EXISTING_FILE, default=None,
              help="PANNs Cnn14 checkpoint (Cnn14_16k_mAP=0.438.pth or Cnn14_mAP=0.431.pth): FD, IS, KL.")
@click.option("--vggish-ckpt", type=EXISTING_FILE, default=None,
              help="torchvggish vggish-10086976.pth: FAD.")
@click.option("--wav-dir", type=OUT_DIR, default=None,
              help="Also write the generated wavs here (NNNNN_<id>.wav and index.csv mapping files to video ids).")
@click.option("--device", default="cpu", show_default=True, type=Device(extra=("auto",)), callback=_device,
              help="cpu, cuda, cuda:N or auto (a GPU if torch sees one).")
def evaluate(checkpoint, shards, split, out, limit, cfg_scales, seeds, steps, batch, cfg, no_waveforms,
             audio_tokenizer, vocoder, extracted, cnn14_ckpt, vggish_ckpt, wav_dir, device) -> None:
    """Masked-token NLL/accuracy (image->audio, audio->image; true, masked and shuffled condition),
    a CFG sweep of generated-token accuracy and diversity, and waveform metrics: audioldm_eval-style
    FD/IS/KL and FAD only with --cnn14-ckpt/--vggish-ckpt, clearly named proxies otherwise. On the
    demo's synthetic set the analytic oracle's class accuracy is reported too. Frame 5 (the middle of
    10) is the image used.
    """
    from avtok.model.checkpoint import CheckpointError
    from avtok.model.evaluate import EvalOptions, markdown_table
    from avtok.model.evaluate import evaluate as run_eval
    from avtok.model.files import write_json
    from avtok.model.token_shards import ShardError, load_tokens
    from avtok.pipeline.extracted import read_clip_audio
    from avtok.pipeline.synthetic import is_synthetic_labels, oracle_scores

    scales = tuple(float(x) for x in cfg_scales.split(",") if x.strip())  # FloatList checked them
    try:
        labels = load_tokens(shards, split=split, verify_checksums=False).labels
        opts = EvalOptions(split=split, limit=limit, batch=batch, cfg_scales=scales, seeds=seeds, steps=steps,
                           waveforms=not no_waveforms, cfg=cfg, vocoder=vocoder, audio_tokenizer=audio_tokenizer,
                           reference_audio=(functools.partial(read_clip_audio, extracted) if extracted else None),
                           cnn14_ckpt=cnn14_ckpt, vggish_ckpt=vggish_ckpt, device=device,
                           oracle=oracle_scores if is_synthetic_labels(labels) else None, wav_dir=wav_dir,
                           progress=lambda msg: click.echo(msg, err=True))
        result = run_eval(checkpoint, shards, opts)
    except (CheckpointError, ShardError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or out}: {exc.strerror or exc}") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    table = markdown_table(result)
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    click.echo(table)
    click.echo(f"wrote {out} and {out.with_suffix('.md')}")
