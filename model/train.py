"""The training loop (nanoGPT-style, top to bottom): one process or `torchrun` DDP.

`train(TrainConfig(...)) -> TrainSummary` is the library entry point used by `avtok train` and the demo.
Every source of randomness is re-seeded per step from (seed, step, micro-batch slot), and the data
stream is a function of (seed, position) (see data.py), so `resume=True` continues exactly from the
last complete checkpoint (checkpoint.py). A folder that holds a run is never started over unless
`overwrite=True`; metrics.jsonl is only appended to (run_log.py).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import ExitStack, closing, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from .checkpoint import (
    CheckpointError,
    ResumePoint,
    TrainState,
    checkpoint_files,
    find_resume_point,
    restore_training,
    resume_mismatch,
    save_training,
    tokenizer_records,
)
from .config import AVConfig, preset
from .data import SampleStream, SplitData, chunk_start, load_split, seed_for
from .files import folder_lock, write_json
from .geometry import SAMPLE_RATE
from .precision import autocast, dtype_name, peak_flops, resolve_device, resolve_precision
from .previews import Previewer
from .run_log import METRICS, RunLog, TrainRow
from .token_scores import HeldOutScores, held_out_scores
from .token_shards import ShardError
from .transformer import AVTransformer, flops_per_sample, num_params

NO_DECAY = ("pos_embed", "dec_pos_embed", "modality_embed", "dec_modality_embed")


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
    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (see precision.py)
    compile: bool = False
    grad_checkpoint: bool = False
    eval_every: int = 1000
    eval_samples: int = 1024
    ckpt_every: int = 1000
    keep_last: int = 0  # keep this many ckpt-*.pt (0 = all); never the one last.pt names
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    resume: bool = False  # continue the run in `out` (from scratch if it has no checkpoint yet)
    overwrite: bool = False  # start over in a folder that holds a run, deleting its checkpoints and logs
    stop_at: int | None = None  # stop after this step with a checkpoint, as if interrupted
    max_bad_steps: int = 20  # consecutive non-finite losses before the run stops
    verify_checksums: bool = True
    peak_tflops: float | None = None  # for MFU where the device is not in PEAK_TFLOPS (e.g. CPU)
    train_split: str = "train"
    eval_split: str = "test"
    log: str = "none"  # also "tensorboard" (the CLI's default) or "wandb" (offline); metrics.jsonl always
    sample_every: int = 0  # previews every N steps (0 = none)
    preview_clips: int = 4  # held-out clips previewed
    preview_steps: int = 12  # sampler steps per preview


@dataclass
class TrainSummary:
    """What one call of `train` did."""

    step: int  # the step the run has reached (and checkpointed)
    steps_run: int  # optimizer steps taken by this call (after a resume, only the new ones)
    losses: list[float]  # loss of each step this call ran, mean over ranks (non-finite for skipped steps)
    final_loss: float | None
    bad_steps: int  # non-finite steps skipped since the run began (all starts)
    seconds: float
    samples_per_s: float | None  # global, over this call
    eval: HeldOutScores | None  # the last eval of this call
    checkpoint: str  # OUT/last.pt
    params: int
    rank: int
    world: int
    rank_samples: int  # samples this rank trained on in this call

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Procs:
    """This process's place in the job (torchrun's environment; one process without it)."""

    world: int
    rank: int
    local_rank: int

    @property
    def master(self) -> bool:
        return self.rank == 0


@dataclass
class Plan:
    """Batch geometry and schedule resolved from the config, the data and the process count."""

    micro: int  # per rank and forward pass
    accum: int  # micro-batches per rank and step
    per_rank: int
    steps: int
    end: int  # the step this call stops after
    lr: float
    warmup: int


def make_plan(cfg: TrainConfig, world: int, n_train: int) -> Plan:
    if cfg.batch_size % world:
        raise TrainingError(f"batch size {cfg.batch_size} is not divisible by {world} processes")
    per_rank = cfg.batch_size // world
    micro = min(cfg.micro_batch or per_rank, per_rank)
    if per_rank % micro:
        raise TrainingError(f"per-process batch {per_rank} is not a multiple of micro-batch {micro}")
    steps = cfg.steps if cfg.steps is not None else math.ceil(cfg.epochs * n_train / cfg.batch_size)
    lr = cfg.lr if cfg.lr is not None else cfg.blr * cfg.batch_size / 256
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(0.025 * steps)
    end = steps if cfg.stop_at is None else min(steps, cfg.stop_at)
    return Plan(micro, per_rank // micro, per_rank, steps, end, lr, warmup)


def make_optimizer(model: AVTransformer, lr: float, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; no weight decay on norms, biases, the mask vector, position and modality embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or name in NO_DECAY else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"
    # On the CPU torch's default is one small update per tensor: the multi-tensor (foreach) update gives
    # the same bits in about half the time on 2 threads (bench/optimizer_step.py); fused CPU AdamW does not
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, fused=fused or None, foreach=None if fused else True)


def new_state(cfg: TrainConfig, mcfg: AVConfig, lr: float, device: torch.device, dtype: torch.dtype) -> TrainState:
    """A freshly initialised model (seeded), its optimizer, GradScaler (fp16 only) and EMA."""
    torch.manual_seed(seed_for("init", cfg.seed))
    model = AVTransformer(mcfg).to(device)
    ema = [p.detach().float().clone() for p in model.parameters()] if cfg.ema else None
    return TrainState(model, make_optimizer(model, lr, cfg, device),
                      torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), ema)


def lr_at(step: int, base: float, warmup: int, total: int, min_lr: float) -> float:
    """Linear warmup to `base`, then half-cycle cosine to `min_lr` (set every step)."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + (base - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> TrainSummary:
    """Train (or resume) a model on `cfg.shards`; write checkpoints and metrics.jsonl to `cfg.out`."""
    procs = Procs(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                  int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(cfg.device, procs.local_rank)
    own_group = procs.world > 1 and not dist.is_initialized()
    if own_group:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        with ExitStack() as stack:
            if procs.master:
                stack.enter_context(folder_lock(cfg.out, "avtok train"))
            return _train(cfg, procs, device, log if procs.master else (lambda _msg: None), stack)
    finally:
        if own_group:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, procs: Procs, device: torch.device, say: Callable[[str], None],
           stack: ExitStack) -> TrainSummary:
    out = Path(cfg.out)
    data = load_split(cfg.shards, cfg.train_split, cfg.verify_checksums)
    test = load_eval_split(cfg)
    plan = make_plan(cfg, procs.world, len(data))
    dtype = resolve_precision(cfg.precision, device)
    amp = autocast(dtype, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    mcfg = preset(cfg.preset, image_codebook=int(data.index["image_codebook"]),
                  audio_codebook=int(data.index["audio_codebook"]), grad_checkpoint=cfg.grad_checkpoint,
                  **cfg.model_overrides)
    state = new_state(cfg, mcfg, plan.lr, device, dtype)
    resolved = {**asdict(cfg), "steps": plan.steps, "lr": plan.lr, "warmup_steps": plan.warmup,
                "micro_batch": plan.micro, "accum": plan.accum, "world": procs.world, "precision": dtype_name(dtype)}
    point = open_run(cfg, out, procs.master, say)
    if point is not None:
        resume_from(point, state, resolved, data.index, say)
    if procs.master:
        write_json(out / "config.json", {"train": resolved, "model": mcfg.to_dict()})
    runlog = stack.enter_context(closing(RunLog(out, cfg.log, procs.master, {"train": resolved, "model": mcfg.to_dict()},
                                                state.step if point else None)))
    runlog.start(state.step, str(point.path) if point else None)
    previewer = make_previewer(cfg, test, data.index, device, procs.master, state.step, plan.end, say)
    model: torch.nn.Module = torch.compile(state.model) if cfg.compile else state.model
    if procs.world > 1:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    stream = SampleStream(len(data), cfg.seed)
    meter = Meter(flops_per_sample(mcfg), peak_flops(device, cfg.peak_tflops), procs.world, cfg.batch_size,
                  len(data), device)
    say(f"{num_params(state.model) / 1e6:.1f}M parameters | {len(data)} train clips | batch {cfg.batch_size} = "
        f"{procs.world}×{plan.accum}×{plan.micro} | {plan.steps} steps | lr {plan.lr:.3g} | "
        f"{dtype_name(dtype)} on {device}")

    state.model.train()
    losses: list[float] = []
    scores: HeldOutScores | None = None
    bad_run = 0
    t0 = time.perf_counter()
    for step in range(state.step, plan.end):
        lr = lr_at(step, plan.lr, plan.warmup, plan.steps, cfg.min_lr)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        loss, gnorm, stats = forward_backward(model, state, data, stream, step, plan, cfg, procs, amp)
        if update(state, cfg, step, loss, gnorm):
            bad_run = 0
        else:
            bad_run += 1
            if bad_run >= cfg.max_bad_steps:
                raise TrainingError(
                    f"stopping at step {step + 1}: {bad_run} non-finite losses in a row ({state.bad_steps} in "
                    f"all); resume from {out / 'last.pt'} with a lower --lr or --precision bf16/fp32")
        losses.append(loss)
        state.step = step + 1
        state.data = {"position": state.step * cfg.batch_size, "seed": cfg.seed, "clips": len(data)}
        meter.add(loss)
        last_step = state.step == plan.end
        if procs.master and (state.step % cfg.log_every == 0 or last_step):
            row = meter.row(state.step, lr, float(gnorm), state.bad_steps, stats)
            runlog.train_row(row)
            say(f"step {row.step}/{plan.steps} | loss {row.loss:.4f} | lr {lr:.3g} | {row.samples_per_s:.1f} "
                f"samples/s | MFU {'n/a' if row.mfu is None else f'{100 * row.mfu:.1f}%'} | skipped {row.bad_steps}")
        if procs.master and test is not None and (state.step % cfg.eval_every == 0 or last_step):
            with ema_weights(list(state.model.parameters()), state.ema):
                scores = held_out_scores(state.model, test, cfg.eval_samples, plan.micro, cfg.seed, device,
                                         state.step, amp)
            runlog.eval(state.step, asdict(scores))
            say(f"eval step {state.step} | i2a nll {scores.i2a_nll:.3f} acc {scores.i2a_acc:.3f} | "
                f"a2i nll {scores.a2i_nll:.3f} acc {scores.a2i_acc:.3f} | "
                f"uncond audio nll {scores.uncond_audio_nll:.3f}")
        if previewer is not None and state.step % cfg.sample_every == 0:
            with ema_weights(list(state.model.parameters()), state.ema):
                runlog.previews(state.step, previewer(state.model, state.step, out, amp), SAMPLE_RATE)
        if procs.master and (state.step % cfg.ckpt_every == 0 or last_step):
            save(out, state, resolved, data.index, scores, cfg.keep_last)
    elapsed = time.perf_counter() - t0
    summary = TrainSummary(
        step=state.step, steps_run=len(losses), losses=losses, final_loss=losses[-1] if losses else None,
        bad_steps=state.bad_steps, seconds=elapsed,
        samples_per_s=len(losses) * cfg.batch_size / elapsed if losses else None, eval=scores,
        checkpoint=str(out / "last.pt"), params=num_params(state.model), rank=procs.rank, world=procs.world,
        rank_samples=len(losses) * plan.per_rank)
    say(f"done: {state.step} steps, final loss {summary.final_loss}, {state.bad_steps} skipped, "
        f"{elapsed:.0f} s, checkpoint {summary.checkpoint}")
    if procs.world > 1:
        dist.barrier()
    return summary


def load_eval_split(cfg: TrainConfig) -> SplitData | None:
    """The held-out split, or None when the token folder has none (the run then skips eval)."""
    try:
        return load_split(cfg.shards, cfg.eval_split, verify_checksums=False)
    except ShardError:
        return None


def make_previewer(cfg: TrainConfig, test: SplitData | None, index: dict[str, Any], device: torch.device,
                   master: bool, start: int, end: int, say: Callable[[str], None]) -> Previewer | None:
    """The sample previewer (rank 0, --sample-every > 0), or None with the reason said once."""
    if not master or cfg.sample_every <= 0 or start // cfg.sample_every == end // cfg.sample_every:
        return None  # (no multiple of sample_every in (start, end]: nothing to preview in this call)
    if test is None:
        say(f"previews off: the token folder has no {cfg.eval_split!r} split")
        return None
    try:
        return Previewer(test, index, cfg.preview_clips, device, steps=cfg.preview_steps, seed=cfg.seed)
    except ValueError as e:
        say(f"previews off: the shards' tokenizers cannot be loaded here ({e})")
        return None


def forward_backward(model: torch.nn.Module, state: TrainState, data: SplitData, stream: SampleStream, step: int,
                     plan: Plan, cfg: TrainConfig, procs: Procs,
                     amp: Any) -> tuple[float, torch.Tensor, dict[str, torch.Tensor]]:
    """One step's micro-batches through the model and back; (mean loss over ranks, grad norm, last stats)."""
    device = next(state.model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    stats: dict[str, torch.Tensor] = {}
    for m in range(plan.accum):
        clips, frames = stream.take(chunk_start(step, cfg.batch_size, plan.micro, procs.rank, plan.accum, m),
                                    plan.micro)
        img, aud = data.gather(clips, frames, device)
        slot_seed = seed_for("step", cfg.seed, step, procs.rank * plan.accum + m)
        torch.manual_seed(slot_seed)  # dropout
        # masks: own generator in eager mode; compiled graphs take the (just seeded) global RNG
        gen = None if cfg.compile else torch.Generator(device=device).manual_seed(slot_seed)
        sync = model.no_sync() if procs.world > 1 and m < plan.accum - 1 else nullcontext()
        with sync, amp:
            loss, stats = model(img, aud, generator=gen)
        state.scaler.scale(loss / plan.accum).backward()
        loss_sum += loss.detach() / plan.accum
    state.scaler.unscale_(state.optimizer)
    gnorm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.clip)
    if procs.world > 1:
        dist.all_reduce(loss_sum)
        loss_sum /= procs.world
    return loss_sum.item(), gnorm, stats


def update(state: TrainState, cfg: TrainConfig, step: int, loss: float, gnorm: torch.Tensor) -> bool:
    """Apply the step (optimizer, scaler, EMA) unless the loss or gradient is non-finite; True if applied."""
    scaler = state.scaler
    bad = not math.isfinite(loss) or (not scaler.is_enabled() and not torch.isfinite(gnorm).item())
    if bad:
        state.bad_steps += 1
        scaler.update()
    else:
        scaler.step(state.optimizer)
        scaler.update()
        if state.ema is not None:
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))  # warm-up so early EMAs are usable
            torch._foreach_lerp_(state.ema, [p.detach().float() for p in state.model.parameters()], 1.0 - decay)
    state.optimizer.zero_grad(set_to_none=True)
    return not bad


class Meter:
    """Loss and throughput since the last logged row."""

    def __init__(self, flops_per_sample: float, peak: float | None, world: int, batch: int, clips: int,
                 device: torch.device) -> None:
        self.fps, self.peak, self.world, self.batch, self.clips, self.device = (
            flops_per_sample, peak, world, batch, clips, device)
        self._reset()

    def _reset(self) -> None:
        self.t, self.n, self.loss_sum, self.finite = time.perf_counter(), 0, 0.0, 0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def add(self, loss: float) -> None:
        self.n += 1
        if math.isfinite(loss):
            self.loss_sum, self.finite = self.loss_sum + loss, self.finite + 1

    def row(self, step: int, lr: float, grad_norm: float, bad_steps: int, stats: dict[str, torch.Tensor]) -> TrainRow:
        sps = self.n * self.batch / max(time.perf_counter() - self.t, 1e-9)
        mem = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None
        row = TrainRow(step=step, epoch=step * self.batch / self.clips,
                       loss=self.loss_sum / self.finite if self.finite else math.nan, lr=lr, grad_norm=grad_norm,
                       samples_per_s=sps, mfu=self.fps * sps / (self.peak * self.world) if self.peak else None,
                       bad_steps=bad_steps, gpu_mem_gb=mem, **{k: float(v) for k, v in stats.items()})
        self._reset()
        return row


def open_run(cfg: TrainConfig, out: Path, master: bool, say: Callable[[str], None]) -> ResumePoint | None:
    """The checkpoint to continue from (None = start fresh); refuses to start over a run unless told to."""
    has_run = bool(checkpoint_files(out)) or (out / "last.pt").is_symlink() or (out / "last.pt").exists()
    if has_run and cfg.overwrite:
        if master:
            clear_run(out)
        say(f"--overwrite: removed the previous run's checkpoints and logs in {out}")
        return None
    if has_run and not cfg.resume:
        raise TrainingError(f"{out} already holds a run ({', '.join(p.name for p in checkpoint_files(out)[-3:])}"
                            f"{' …' if len(checkpoint_files(out)) > 3 else ''}); pass --resume to continue it, "
                            "--overwrite to replace it, or choose another --out")
    if not cfg.resume:
        return None
    try:
        point = find_resume_point(out)
    except CheckpointError as e:
        raise TrainingError(f"--resume: {e}; move the damaged files away (or --overwrite to start over)") from None
    if point is None:
        say(f"--resume: no {out / 'last.pt'} yet, starting from scratch")
    for why in point.passed_over if point else []:
        say(f"--resume: skipping {why}")
    return point


def clear_run(out: Path) -> None:
    """Delete what a run writes into `out` (checkpoints, last.pt, metrics, config, samples, dashboards)."""
    import shutil

    for p in [*checkpoint_files(out), out / "last.pt", out / METRICS, out / "config.json", out / "wandb-run-id"]:
        if p.is_symlink() or p.exists():
            p.unlink()
    for d in ("samples", "tensorboard", "wandb"):
        shutil.rmtree(out / d, ignore_errors=True)


def resume_from(point: ResumePoint, state: TrainState, resolved: dict[str, Any], index: dict[str, Any],
                say: Callable[[str], None]) -> None:
    why = resume_mismatch(point.ckpt, resolved, state.model.cfg.to_dict(), index)
    if why:
        raise TrainingError(f"--resume: {point.path}: {why}")
    restore_training(point.ckpt, state)
    say(f"resumed from {point.path} at step {state.step}")


def save(out: Path, state: TrainState, resolved: dict[str, Any], index: dict[str, Any],
         scores: HeldOutScores | None, keep_last: int) -> None:
    """Checkpoint `state`; a failed write (disk full, ...) leaves last.pt naming the previous checkpoint."""
    try:
        save_training(out, state, resolved, tokenizer_records(index), asdict(scores) if scores else {}, keep_last)
    except OSError as e:
        raise TrainingError(f"could not write {out / f'ckpt-{state.step}.pt'}: {e.strerror or e}; "
                            f"{out / 'last.pt'} still names the previous checkpoint") from None


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
