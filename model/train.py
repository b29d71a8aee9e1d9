"""The training loop (nanoGPT-style, top to bottom): one process or `torchrun` DDP.

`train(TrainConfig(...)) -> summary dict` is the library entry point used by `avtok train` and the demo.
Every source of randomness is re-seeded per step from (seed, step, micro-batch slot), and the data
stream is a function of (seed, position) (see data.py), so `resume=True` continues exactly from
`out/last.pt`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from .checkpoint import load_checkpoint, save_checkpoint
from .config import preset
from .data import SampleStream, SplitData, chunk_start, load_split, seed_for
from .files import write_json
from .token_shards import ShardError
from .transformer import AVTransformer, flops_per_sample, num_params

NO_DECAY = ("pos_embed", "dec_pos_embed", "modality_embed", "dec_modality_embed")
# Dense bf16/fp16 tensor-core peaks (TFLOP/s) for the MFU figure, matched on the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "V100": 125.0, "L40S": 362.0, "A10G": 70.0,
               "RTX 4090": 165.0, "RTX 3090": 71.0}
# Settings a resumed run must share with the checkpoint (others, like steps or eval cadence, may change).
RESUME_KEYS = ("preset", "model_overrides", "batch_size", "lr", "blr", "weight_decay", "betas", "clip", "ema",
               "ema_decay", "seed", "warmup_steps")


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""


@dataclass
class TrainConfig:
    shards: str
    out: str
    preset: str = "large"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # AVConfig fields, e.g. {"dec_depth": 12}
    batch_size: int = 256  # global, over all ranks and accumulation steps
    micro_batch: int | None = None  # per rank and forward pass; None = batch_size / world
    steps: int | None = None  # total optimizer steps; None = from epochs
    epochs: float = 1000.0
    lr: float | None = None  # absolute; None = blr · batch_size / 256
    blr: float = 1.5e-4
    min_lr: float = 0.0
    warmup_steps: int | None = None  # None = 2.5% of steps (MAGE: 40 of 1600 epochs)
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 3.0
    ema: bool = False
    ema_decay: float = 0.9999
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    compile: bool = False
    grad_checkpoint: bool = False
    eval_every: int = 1000
    eval_samples: int = 1024
    ckpt_every: int = 1000
    keep_last: int = 0  # keep this many ckpt-*.pt (0 = all)
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    stop_at: int | None = None  # stop after this step with a checkpoint, as if interrupted
    max_bad_steps: int = 20  # consecutive non-finite losses before the run stops
    verify_checksums: bool = True
    peak_tflops: float | None = None  # for MFU where the device is not in PEAK_TFLOPS (e.g. CPU)
    train_split: str = "train"
    eval_split: str = "test"


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on GPUs that support it, else fp16 (with GradScaler); fp32 on CPU."""
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        # capability, not is_bf16_supported(): that one reports emulated bf16 as supported on V100 (sm70)
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    if name not in table:
        raise TrainingError(f"precision must be auto, bf16, fp16 or fp32, got {name!r}")
    return table[name]


def peak_flops(cfg: TrainConfig, device: torch.device) -> float | None:
    if cfg.peak_tflops:
        return cfg.peak_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tf in PEAK_TFLOPS.items():
            if key in name:
                return tf * 1e12
    return None


def make_optimizer(model: AVTransformer, lr: float, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; no weight decay on norms, biases, the mask vector, position and modality embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or name in NO_DECAY else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, fused=fused or None)


def lr_at(step: int, base: float, warmup: int, total: int, min_lr: float) -> float:
    """Linear warmup to `base`, then half-cycle cosine to `min_lr` (set every step)."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + (base - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def evaluate(model: AVTransformer, data: SplitData, n: int, batch: int, seed: int, device: torch.device,
             autocast: Any) -> dict[str, float]:
    """Masked-token NLL / accuracy at mask ratio 1.0 of the target: image→audio, audio→image, and both
    unconditional (both modalities masked) NLLs for comparison. Fixed clips and frames for every call."""
    was_training = model.training
    model.eval()
    n = min(n, len(data))
    g = torch.Generator().manual_seed(seed_for("eval-frames", seed))
    frames = torch.randint(0, data.image.shape[1], (n,), generator=g)
    sums = {k: 0.0 for k in ("i2a_nll", "i2a_acc", "a2i_nll", "a2i_acc", "uncond_audio_nll", "uncond_image_nll")}
    for s in range(0, n, batch):
        clips = torch.arange(s, min(n, s + batch))
        img, aud = data.gather(clips, frames[clips], device)
        yes_i, yes_a = torch.ones_like(img, dtype=torch.bool), torch.ones_like(aud, dtype=torch.bool)
        with autocast:
            _, la = model.forward_logits(img, aud, yes_i, ~yes_a)
            li, _ = model.forward_logits(img, aud, ~yes_i, yes_a)
            ui, ua = model.forward_logits(img, aud, ~yes_i, ~yes_a)
        for key, logits, target in (("i2a", la, aud), ("a2i", li, img), ("uncond_audio", ua, aud),
                                    ("uncond_image", ui, img)):
            logp = logits.float().log_softmax(-1)
            sums[f"{key}_nll"] += -logp.gather(-1, target[..., None]).mean().item() * len(clips)
            if f"{key}_acc" in sums:
                sums[f"{key}_acc"] += (logits.argmax(-1) == target).float().mean().item() * len(clips)
    model.train(was_training)
    return {k: v / n for k, v in sums.items()}


def tokenizer_records(index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The checkpoint's {"image": ..., "audio": ...} tokenizer records, from the token index."""
    out = {}
    for mod in ("image", "audio"):
        rec = dict(index.get(f"{mod}_tokenizer", {}))
        rec.setdefault("modality", mod)
        rec.setdefault("codebook_size", index.get(f"{mod}_codebook"))
        out[mod] = rec
    return out


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) a model on `cfg.shards`; write checkpoints and metrics.jsonl to `cfg.out`."""
    # -- processes and device ------------------------------------------------------------------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    own_group = world > 1 and not dist.is_initialized()
    if own_group:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    master = rank == 0
    say = log if master else (lambda _msg: None)
    out = Path(cfg.out)
    try:
        # -- data --------------------------------------------------------------------------------------
        data = load_split(cfg.shards, cfg.train_split, cfg.verify_checksums)
        try:
            test: SplitData | None = load_split(cfg.shards, cfg.eval_split, verify_checksums=False)
        except ShardError:
            test = None
        index = data.index
        n_train = len(data)

        # -- batch geometry and schedule ---------------------------------------------------------------
        if cfg.batch_size % world:
            raise TrainingError(f"batch size {cfg.batch_size} is not divisible by {world} processes")
        per_rank = cfg.batch_size // world
        micro = min(cfg.micro_batch or per_rank, per_rank)
        if per_rank % micro:
            raise TrainingError(f"per-process batch {per_rank} is not a multiple of micro-batch {micro}")
        accum = per_rank // micro
        steps = cfg.steps if cfg.steps is not None else math.ceil(cfg.epochs * n_train / cfg.batch_size)
        base_lr = cfg.lr if cfg.lr is not None else cfg.blr * cfg.batch_size / 256
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(0.025 * steps)
        dtype = resolve_precision(cfg.precision, device)
        autocast = nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        # -- model, optimizer, scaler, EMA -------------------------------------------------------------
        mcfg = preset(cfg.preset, image_codebook=int(index["image_codebook"]),
                      audio_codebook=int(index["audio_codebook"]), grad_checkpoint=cfg.grad_checkpoint,
                      **cfg.model_overrides)
        torch.manual_seed(seed_for("init", cfg.seed))
        raw = AVTransformer(mcfg).to(device)
        optimizer = make_optimizer(raw, base_lr, cfg, device)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        params = list(raw.parameters())
        ema = [p.detach().float().clone() for p in params] if cfg.ema else None
        resolved = {**asdict(cfg), "steps": steps, "lr": base_lr, "warmup_steps": warmup,
                    "micro_batch": micro, "accum": accum, "world": world, "precision": str(dtype).split(".")[-1]}

        # -- resume ------------------------------------------------------------------------------------
        start = 0
        bad_total = 0
        last = out / "last.pt"
        if cfg.resume and last.exists():
            ckpt = load_checkpoint(last, map_location="cpu")
            check_resume(ckpt, resolved, mcfg.to_dict(), index, last)
            raw.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"])
            if ema is not None:
                for e, name in zip(ema, [n for n, _ in raw.named_parameters()], strict=True):
                    e.copy_(ckpt["ema"][name])
            start = int(ckpt["step"])
            bad_total = int(ckpt.get("bad_steps", 0))
            torch.set_rng_state(ckpt["rng"]["torch"])  # every step re-seeds anyway; restored for callers
            say(f"resumed from {last} at step {start}")
        elif cfg.resume:
            say(f"--resume: no {last} yet, starting from scratch")
        if master:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "config.json", {"train": resolved, "model": mcfg.to_dict()})
            trim_metrics(out / "metrics.jsonl", start)

        model: torch.nn.Module = torch.compile(raw) if cfg.compile else raw
        if world > 1:
            model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                        broadcast_buffers=False)
        stream = SampleStream(n_train, cfg.seed)
        fps = flops_per_sample(mcfg)
        peak = peak_flops(cfg, device)
        say(f"{num_params(raw) / 1e6:.1f}M parameters | {n_train} train clips | batch {cfg.batch_size} = "
            f"{world}×{accum}×{micro} | {steps} steps | lr {base_lr:.3g} | {resolved['precision']} on {device}")

        # -- the loop ----------------------------------------------------------------------------------
        raw.train()
        losses: list[float] = []
        evals: list[dict[str, Any]] = []
        bad_run = 0
        end = steps if cfg.stop_at is None else min(steps, cfg.stop_at)
        t_log, n_log, loss_log = time.perf_counter(), 0, 0.0
        t0 = time.perf_counter()
        step = start
        for step in range(start, end):
            lr = lr_at(step, base_lr, warmup, steps, cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for m in range(accum):
                clips, frames = stream.take(chunk_start(step, cfg.batch_size, micro, rank, accum, m), micro)
                img, aud = data.gather(clips, frames, device)
                slot_seed = seed_for("step", cfg.seed, step, rank * accum + m)
                torch.manual_seed(slot_seed)  # dropout
                # masks: own generator in eager mode; compiled graphs take the (just seeded) global RNG
                gen = None if cfg.compile else torch.Generator(device=device).manual_seed(slot_seed)
                sync = model.no_sync() if world > 1 and m < accum - 1 else nullcontext()
                with sync, autocast:
                    loss, stats = model(img, aud, generator=gen)
                scaler.scale(loss / accum).backward()
                loss_sum += loss.detach() / accum
            scaler.unscale_(optimizer)
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            if world > 1:
                dist.all_reduce(loss_sum)
                loss_sum /= world
            loss_val = loss_sum.item()
            bad = not math.isfinite(loss_val) or (not scaler.is_enabled() and not torch.isfinite(gnorm).item())
            if bad:
                bad_run += 1
                bad_total += 1
                scaler.update()
                if bad_run >= cfg.max_bad_steps:
                    raise TrainingError(
                        f"stopping at step {step + 1}: {bad_run} non-finite losses in a row "
                        f"({bad_total} in all); resume from {last} with a lower --lr or --precision bf16/fp32")
            else:
                bad_run = 0
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    decay = min(cfg.ema_decay, (1 + step) / (10 + step))  # warm-up so early EMAs are usable
                    torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1.0 - decay)
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss_val)
            done = step + 1
            n_log += 1
            loss_log += loss_val if math.isfinite(loss_val) else 0.0

            # -- log, eval, checkpoint (rank 0) ---------------------------------------------------------
            if master and (done % cfg.log_every == 0 or done == end):
                dt = time.perf_counter() - t_log
                sps = n_log * cfg.batch_size / dt
                mfu = fps * sps / (peak * world) if peak else None
                row = {"step": done, "epoch": done * cfg.batch_size / n_train, "loss": loss_log / n_log,
                       "lr": lr, "grad_norm": float(gnorm), "samples_per_s": sps, "mfu": mfu,
                       "bad_steps": bad_total, **{k: float(v) for k, v in stats.items()}}
                append_metrics(out / "metrics.jsonl", row)
                mfu_s = f"{100 * mfu:.1f}%" if mfu is not None else "n/a"
                say(f"step {done}/{steps} | loss {row['loss']:.4f} | lr {lr:.3g} | {sps:.1f} samples/s | "
                    f"MFU {mfu_s} | skipped {bad_total}")
                t_log, n_log, loss_log = time.perf_counter(), 0, 0.0
            if master and test is not None and (done % cfg.eval_every == 0 or done == end):
                with ema_weights(params, ema):
                    ev = evaluate(raw, test, cfg.eval_samples, micro, cfg.seed, device, autocast)
                ev["step"] = done
                evals.append(ev)
                append_metrics(out / "metrics.jsonl", {"step": done, "eval": ev})
                say(f"eval step {done} | i2a nll {ev['i2a_nll']:.3f} acc {ev['i2a_acc']:.3f} | "
                    f"a2i nll {ev['a2i_nll']:.3f} acc {ev['a2i_acc']:.3f} | "
                    f"uncond audio nll {ev['uncond_audio_nll']:.3f}")
            if master and (done % cfg.ckpt_every == 0 or done == end):
                ckpt = {
                    "model": raw.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "ema": ({n: e.clone() for (n, _), e in zip(raw.named_parameters(), ema, strict=True)}
                            if ema is not None else None),
                    "config": mcfg.to_dict(), "train_config": resolved, "step": done,
                    "epoch": done * cfg.batch_size / n_train,
                    "data": {"position": done * cfg.batch_size, "seed": cfg.seed, "clips": n_train},
                    "rng": {"torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
                    "tokenizers": tokenizer_records(index), "bad_steps": bad_total,
                    "metrics": evals[-1] if evals else {},
                }
                save_checkpoint(ckpt, out, done, keep_last=cfg.keep_last)
        elapsed = time.perf_counter() - t0
        ran = len(losses)
        summary = {"steps": end, "ran": ran, "losses": losses, "final_loss": losses[-1] if losses else None,
                   "bad_steps": bad_total, "seconds": elapsed,
                   "samples_per_s": ran * cfg.batch_size / elapsed if ran else None,
                   "eval": evals[-1] if evals else None, "checkpoint": str(last), "params": num_params(raw),
                   "rank": rank, "world": world, "rank_samples": ran * per_rank}
        say(f"done: {end} steps, final loss {summary['final_loss']}, {bad_total} skipped, "
            f"{elapsed:.0f} s, checkpoint {last}")
        if world > 1:
            dist.barrier()
        return summary
    finally:
        if own_group:
            dist.destroy_process_group()


class ema_weights:  # noqa: N801 - used as a context manager
    """Swap EMA weights into the parameters for the `with` body (no-op without EMA)."""

    def __init__(self, params: list[torch.nn.Parameter], ema: list[torch.Tensor] | None) -> None:
        self.params, self.ema, self.backup = params, ema, None

    def __enter__(self) -> None:
        if self.ema is not None:
            self.backup = [p.detach().clone() for p in self.params]
            with torch.no_grad():
                for p, e in zip(self.params, self.ema, strict=True):
                    p.copy_(e)

    def __exit__(self, *exc: object) -> None:
        if self.backup is not None:
            with torch.no_grad():
                for p, b in zip(self.params, self.backup, strict=True):
                    p.copy_(b)


def check_resume(ckpt: dict[str, Any], resolved: dict[str, Any], model_cfg: dict[str, Any],
                 index: dict[str, Any], path: Path) -> None:
    """Refuse to resume with settings or data that differ from the checkpoint's."""
    old = ckpt.get("train_config", {})
    for key in RESUME_KEYS:
        a, b = old.get(key), resolved.get(key)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = list(a), list(b)
        if a != b:
            raise TrainingError(f"--resume: {key} is {b!r} but {path} was trained with {a!r}")
    ck_model = {k: v for k, v in ckpt["config"].items() if k != "grad_checkpoint"}
    if ck_model != {k: v for k, v in model_cfg.items() if k != "grad_checkpoint"}:
        raise TrainingError(f"--resume: the model config differs from the one in {path}")
    for mod, rec in tokenizer_records(index).items():
        had = ckpt["tokenizers"].get(mod, {}).get("fingerprint")
        if had != rec.get("fingerprint"):
            raise TrainingError(f"--resume: {mod} tokenizer fingerprint of the shards ({rec.get('fingerprint')}) "
                                f"differs from {path}'s ({had})")


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def trim_metrics(path: Path, step: int) -> None:
    """Drop rows logged after `step` (a resumed run logs them again)."""
    if not path.exists():
        return
    rows = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(r + "\n" for r in rows))
