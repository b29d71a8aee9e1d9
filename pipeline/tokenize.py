"""`avtok tokenize`: extracted shards → one Parquet token shard each , on Ray actors (format: docs/formats.md).

Layout of the output folder:
  tokens-000000.parquet, tokens-000000.stats.json, ...  one per `extracted/shard-NNNNNN.tar`
  plan.json    the tokenizers (kind, fingerprint, ...) and mel parameters the shards are made with:
               a re-run with other tokenizers into the same folder is refused
  index.json   make_meta(...) + every finished shard (rows, sha256, splits), rebuilt each run
Each actor loads both tokenizers once (one actor per GPU, or one CPU actor using every core) and
turns whole shards into token shards: JPEG decoding runs in a thread pool ahead of the model, frames
and mels go through the tokenizers in batches, the shard is written under a temporary name and
renamed. A re-run skips shards whose stats file exists.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from avtok.model.files import read_json, sha256_file, write_json
from avtok.model.geometry import MEL_PARAMS, N_FRAMES
from avtok.model.token_shards import IMAGE_TOKENS, make_meta, shard_name, write_token_index, write_token_shard

from .extracted import decode_sample, iter_raw_samples
from .output_folder import claimed, remove_outputs
from .runner import ProgressEvent, RunResult, ShardJob, ShardStats, run_shards

_SHARD_RE = re.compile(r"^shard-(\d{6})\.tar$")


class TokenizeError(ValueError):
    """Input or options that `tokenize` refuses; the message says what to do."""


@dataclass
class TokenizeConfig:
    """What every worker needs to build its tokenizers (plain data: it is pickled to Ray actors)."""

    image_tokenizer: str
    audio_tokenizer: str
    image_kind: str = "taming"
    audio_kind: str = "specvqgan"
    device: str = "cpu"
    batch_size: int = 16
    fast: bool = False
    decode_threads: int = 4
    chunk_clips: int = 64


def guess_kind(path: str | os.PathLike, modality: str) -> str:
    """patch-kmeans for .safetensors files, else the published VQGAN of that modality."""
    if str(path).endswith(".safetensors"):
        return "patch-kmeans"
    return "taming" if modality == "image" else "specvqgan"


def load_tokenizers(cfg: TokenizeConfig):
    """(image tokenizer, audio tokenizer) on cfg.device, in fast mode if asked."""
    from avtok.model.tokenizers import load_tokenizer

    img = load_tokenizer(cfg.image_tokenizer, cfg.image_kind, modality="image")
    aud = load_tokenizer(cfg.audio_tokenizer, cfg.audio_kind, modality="audio")
    for tok, want in ((img, "image"), (aud, "audio")):
        if tok.modality != want:
            raise TokenizeError(f"{tok.path}: a {tok.kind} tokenizer encodes {tok.modality}, but it was given "
                                f"as the {want} tokenizer")
        if tok.codebook_size > 65536:
            raise TokenizeError(f"{tok.path}: codebook of {tok.codebook_size} does not fit uint16 tokens")
        tok.to(cfg.device)
        tok.fast = cfg.fast
    return img, aud


# --- reading extracted shards -----------------------------------------------------------------


def _decode_sample(key: str, members: dict[str, bytes]) -> tuple[dict, np.ndarray, np.ndarray]:
    """(meta, frames uint8 [10,256,256,3], mel float16 [80,848]); raises ValueError on a bad sample."""
    sample = decode_sample(key, members, decode_audio=False)
    return sample.meta, sample.frames, sample.mel


def _decoded(path: Path, threads: int, ahead: int) -> Iterator[tuple[str, Any]]:
    """(key, decoded sample or the exception) in order, decoding up to `ahead` samples in parallel."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        pending: deque = deque()
        for key, members in iter_raw_samples(path):
            pending.append((key, pool.submit(_decode_sample, key, members)))
            if len(pending) >= ahead:
                k, fut = pending.popleft()
                yield k, _result(fut)
        while pending:
            k, fut = pending.popleft()
            yield k, _result(fut)


def _result(fut) -> Any:
    try:
        return fut.result()
    except Exception as exc:  # one bad sample is that row's error, not the shard's
        return exc


# --- one shard ----------------------------------------------------------------------------------


def _encode_all(tok, x_uint8_or_float: np.ndarray, to_input: Callable, batch_size: int) -> np.ndarray:
    """Tokens [N, L] uint16 of N inputs, `batch_size` per forward pass. Converts on the device."""
    import torch

    out = []
    for s in range(0, len(x_uint8_or_float), batch_size):
        # uint8/fp16 cross to the device and are converted there (4×/2× fewer bytes than float32)
        chunk = torch.from_numpy(np.ascontiguousarray(x_uint8_or_float[s:s + batch_size])).to(tok.device)
        out.append(tok.encode(to_input(chunk)).to(torch.int32))
    # one device→host copy per chunk, so the GPU is not stalled after every batch
    return torch.cat(out).cpu().numpy().astype(np.uint16) if out else np.zeros((0, 1), np.uint16)


@dataclass
class TokenShardStats(ShardStats):
    """One token shard: `clips` tokenized + `errors` unreadable samples of extracted shard `input`."""

    input: str = ""  # the extracted shard's file name
    clips: int = 0
    errors: int = 0
    error_rows: list[dict] = field(default_factory=list)  # {video_id, error}
    entry: dict = field(default_factory=dict)  # the shard's index.json entry
    model_seconds: float = 0.0  # time inside the tokenizers
    bytes: int = 0  # size of the token shard


def tokenize_shard(extracted_path: str | os.PathLike, out_path: str | os.PathLike, image_tok, audio_tok,
                   meta: dict, batch_size: int = 16, report: Callable[..., None] | None = None,
                   decode_threads: int = 4, chunk_clips: int = 64, source_sha256: str = "") -> TokenShardStats:
    """Tokenize one extracted shard into one token shard (atomic write). Returns stats with the index
    entry (`entry`), error rows and timings. Bad samples become error rows; the shard still completes
    (an extracted shard without a readable sample gives an empty token shard). The token shard's
    metadata and its index entry record the extracted shard's name and sha256 (`source`)."""
    from avtok.model.tokenizers import frames_to_input, mel_to_input

    report = report or (lambda **_: None)
    extracted_path, out_path = Path(extracted_path), Path(out_path)
    ids: list[str] = []
    labels: list[str] = []
    splits: list[str] = []
    image_parts: list[np.ndarray] = []
    audio_parts: list[np.ndarray] = []
    errors: list[dict] = []
    t_model = 0.0
    buf: list[tuple[dict, np.ndarray, np.ndarray]] = []

    def flush() -> None:
        nonlocal t_model
        if not buf:
            return
        frames = np.concatenate([f for _, f, _ in buf])  # [n·10, 256, 256, 3]
        mels = np.stack([m for _, _, m in buf])
        t0 = time.perf_counter()
        img = _encode_all(image_tok, frames, frames_to_input, batch_size)
        aud = _encode_all(audio_tok, mels, mel_to_input, batch_size)
        t_model += time.perf_counter() - t0
        image_parts.append(img.reshape(len(buf), N_FRAMES, IMAGE_TOKENS))
        audio_parts.append(aud)
        for meta_s, _, _ in buf:
            ids.append(str(meta_s["video_id"]))
            labels.append(str(meta_s.get("label", "") or ""))
            splits.append(str(meta_s.get("split", "") or ""))
        report(rows=len(buf))
        buf.clear()

    for key, item in _decoded(extracted_path, decode_threads, ahead=max(chunk_clips, 2 * decode_threads)):
        if isinstance(item, Exception):
            errors.append({"video_id": key, "error": f"{type(item).__name__}: {item}"})
            report(rows=1, errors=1)
            continue
        buf.append(item)
        if len(buf) >= chunk_clips:
            flush()
    flush()
    image = np.concatenate(image_parts) if image_parts else np.zeros((0, N_FRAMES, IMAGE_TOKENS), np.uint16)
    audio = np.concatenate(audio_parts) if audio_parts else np.zeros((0, audio_tok.grid[0] * audio_tok.grid[1]),
                                                                     np.uint16)
    source = {"file": extracted_path.name, "sha256": source_sha256 or sha256_file(extracted_path)}
    entry = write_token_shard(out_path, {**meta, "source": source}, ids, labels, splits, image, audio)
    entry["source"] = source
    return TokenShardStats(input=extracted_path.name, clips=len(ids), errors=len(errors), error_rows=errors,
                           entry=entry, model_seconds=round(t_model, 3), bytes=out_path.stat().st_size)


class TokenizeWorker:
    """Runner actor: holds both tokenizers (loaded once) and tokenizes whole shards."""

    def __init__(self, cfg: TokenizeConfig, meta: dict):
        import torch

        if cfg.device == "cpu":
            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))))
        self.cfg, self.meta = cfg, meta
        self.image_tok, self.audio_tok = load_tokenizers(cfg)
        for tok, rec in ((self.image_tok, meta["image_tokenizer"]), (self.audio_tok, meta["audio_tokenizer"])):
            if tok.fingerprint != rec["fingerprint"]:
                raise TokenizeError(f"{tok.path}: weights changed since the run was planned "
                                    f"(fingerprint {tok.fingerprint[:12]} != {rec['fingerprint'][:12]})")

    def run_shard(self, job: ShardJob, report: Callable[..., None]) -> TokenShardStats:
        return tokenize_shard(job.payload, job.output, self.image_tok, self.audio_tok, self.meta,
                              batch_size=self.cfg.batch_size, report=report,
                              decode_threads=self.cfg.decode_threads, chunk_clips=self.cfg.chunk_clips,
                              source_sha256=job.input_sha256)


# --- the whole folder ---------------------------------------------------------------------------


def _json_norm(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


def check_extracted(extracted: Path) -> tuple[dict, list[tuple[int, Path]]]:
    """Read `extracted/index.json`, refuse other mel parameters; return (index, [(n, shard path)]) of the
    shards the index lists as finished."""
    index_path = extracted / "index.json"
    if not extracted.is_dir():
        raise TokenizeError(f"{extracted}: no such folder (run `avtok extract` first)")
    if not index_path.is_file():
        raise TokenizeError(f"{index_path}: missing; --extracted must be the output folder of `avtok extract`")
    index = read_json(index_path)
    got = index.get("mel_params")
    if _json_norm(got) != _json_norm(MEL_PARAMS):
        diff = sorted(k for k in set(MEL_PARAMS) | set(got or {})
                      if _json_norm((got or {}).get(k)) != _json_norm(MEL_PARAMS.get(k)))
        raise TokenizeError(f"{index_path}: mel parameters differ from what the audio tokenizer expects "
                            f"({', '.join(diff) or 'missing'}); re-extract with this avtok version")
    # The shards index.json lists are the finished ones (a failed shard's tar may exist, unverified).
    listed = [s.get("name", "") for s in index.get("shards", []) if isinstance(s, dict)]
    names = listed if "shards" in index else [p.name for p in extracted.iterdir()]
    shards = sorted((int(m.group(1)), extracted / name) for name in names if (m := _SHARD_RE.match(name)))
    missing = [p.name for _, p in shards if not p.is_file()]
    if missing:
        raise TokenizeError(f"{extracted / missing[0]}: listed in index.json but missing")
    if not shards:
        raise TokenizeError(f"{extracted}: holds no shard-NNNNNN.tar files")
    return index, shards


@dataclass
class TokenizeSummary:
    """The whole run: `clips` tokenized, `errors` unreadable samples, over every finished shard."""

    clips: int = 0
    errors: int = 0
    shards: int = 0
    shards_run: int = 0
    shards_skipped: int = 0
    shards_failed: list[tuple[int, str]] = field(default_factory=list)
    shards_stale: list[str] = field(default_factory=list)  # token shards redone: their extracted shard changed
    bytes: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    clips_run: int = 0
    device: str = "cpu"
    workers: int = 1
    out: str = ""

    def line(self) -> str:
        failed = f", {len(self.shards_failed)} shard(s) FAILED (re-run to retry)" if self.shards_failed else ""
        rate = f", {self.clips_run / self.seconds:.1f} clips/s" if self.clips_run and self.seconds > 0 else ""
        per_clip = f", {self.bytes / self.clips / 1024:.2f} KiB/clip" if self.clips else ""
        stale = (f", redid {len(self.shards_stale)} whose extracted shard changed: {', '.join(self.shards_stale)}"
                 if self.shards_stale else "")
        return (f"tokenized {self.clips} clips ({self.errors} errors) into {self.shards} shards "
                f"({self.shards_run} run, {self.shards_skipped} already done{failed}{stale}) on {self.workers}× "
                f"{self.device} in {self.seconds:.1f} s{rate}{per_clip} → {self.out}")


OUTPUT_PATTERNS = ("tokens-*.parquet", "tokens-*.stats.json", "plan.json", "index.json")
TEMP_PATTERNS = (".tokens-*.tmp", ".*.json.*.tmp")


def is_tokenize_output(out: Path) -> bool:
    """An earlier `avtok tokenize` output (its plan.json), which a run into the same --out resumes."""
    try:
        plan = read_json(out / "plan.json")
        return isinstance(plan, dict) and "meta" in plan and "extracted" in plan
    except (OSError, ValueError):
        return False


def _plan(out: Path, meta: dict, extracted: Path, overwrite: bool) -> dict:
    """Fix the tokenizers of `out` on the first run; later runs must use the same weights and input
    (or --overwrite: the old token shards are deleted and the run starts over)."""
    plan_path = out / "plan.json"
    ident = {m: {k: meta[f"{m}_tokenizer"][k] for k in ("kind", "fingerprint", "modality", "codebook_size")}
             for m in ("image", "audio")}
    if plan_path.exists():
        old = read_json(plan_path)
        old_ident = {m: {k: old["meta"][f"{m}_tokenizer"].get(k) for k in ident[m]} for m in ident}
        problem = None
        if old_ident != ident or _json_norm(old["meta"]["mel"]) != _json_norm(meta["mel"]):
            problem = f"{out} already holds tokens made with other tokenizers ({old_ident} vs {ident})"
        elif old.get("extracted") != str(extracted.resolve()):
            problem = f"{out} holds tokens of {old.get('extracted')}, not of {extracted.resolve()}"
        if problem is None:
            return old["meta"]  # same weights: keep the recorded paths so every shard's metadata agrees
        if not overwrite:
            raise TokenizeError(f"{problem}; use another --out, or --overwrite to replace them")
    if overwrite:
        remove_outputs(out, OUTPUT_PATTERNS)
    write_json(plan_path, {"meta": meta, "extracted": str(extracted.resolve())})
    return meta


def _shard_sha256(ext_index: dict, path: Path) -> str:
    """The extracted shard's sha256 as its index.json records it (computed when not recorded)."""
    recorded = {s.get("name"): s.get("sha256") for s in ext_index.get("shards", []) if isinstance(s, dict)}
    return recorded.get(path.name) or sha256_file(path)


def _config(image_tokenizer, audio_tokenizer, image_kind, audio_kind, device, batch_size, fast, address,
            decode_threads) -> tuple[TokenizeConfig, int]:
    """The workers' config and the number of visible GPUs."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    n_gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    if device.startswith("cuda") and n_gpus == 0 and address is None:
        raise TokenizeError("--device cuda but no CUDA device is visible")
    cfg = TokenizeConfig(
        image_tokenizer=str(Path(image_tokenizer).resolve()), audio_tokenizer=str(Path(audio_tokenizer).resolve()),
        image_kind=image_kind or guess_kind(image_tokenizer, "image"),
        audio_kind=audio_kind or guess_kind(audio_tokenizer, "audio"),
        device="cuda" if device.startswith("cuda") else "cpu",
        batch_size=batch_size or (64 if device.startswith("cuda") else 8), fast=fast,
        decode_threads=decode_threads or max(2, min(8, (os.cpu_count() or 2) // max(n_gpus, 1))))
    return cfg, n_gpus


def _meta(cfg: TokenizeConfig) -> dict:
    """Load both tokenizers once here: fingerprints for the metadata, and a bad file fails before Ray starts."""
    img, aud = load_tokenizers(TokenizeConfig(**{**asdict(cfg), "device": "cpu", "fast": False}))
    return make_meta(image_tokenizer=img.record(), audio_tokenizer=aud.record(), mel=MEL_PARAMS,
                     image_codebook=img.codebook_size, audio_codebook=aud.codebook_size)


def run_tokenize(extracted: str | os.PathLike, out: str | os.PathLike, image_tokenizer: str | os.PathLike,
                 audio_tokenizer: str | os.PathLike, image_kind: str | None = None, audio_kind: str | None = None,
                 device: str | None = None, batch_size: int | None = None, fast: bool = False,
                 workers: int | None = None, address: str | None = None, max_retries: int = 2,
                 decode_threads: int | None = None, progress: Callable[[ProgressEvent], None] | None = None,
                 on_plan: Callable[[int, int], None] | None = None, in_process: bool = False,
                 allow_incomplete: bool = False, overwrite: bool = False) -> TokenizeSummary:
    """Tokenize every extracted shard not done yet (or changed since), then rebuild `out/index.json`.

    Refuses an extraction with failed shards unless `allow_incomplete`, and an `out` that holds
    something else than tokens of this extraction with these tokenizers unless `overwrite`.
    """
    t0 = time.perf_counter()
    extracted, out = Path(extracted), Path(out)
    ext_index, shards = check_extracted(extracted)
    ext_complete = ext_index.get("complete", True) is not False
    if not ext_complete and not allow_incomplete:
        failed = ext_index.get("counts", {}).get("shards_failed", "some")
        raise TokenizeError(f"{extracted}: the extraction is incomplete ({failed} shard(s) failed); re-run "
                            "`avtok extract` to finish it, or pass --allow-incomplete")
    cfg, n_gpus = _config(image_tokenizer, audio_tokenizer, image_kind, audio_kind, device, batch_size, fast,
                          address, decode_threads)
    meta = _meta(cfg)
    with claimed(out, is_tokenize_output, "tokenize", overwrite, TEMP_PATTERNS):
        meta = _plan(out, meta, extracted, overwrite)
        jobs = [ShardJob(index=n, payload=str(path), output=out / shard_name(n),
                         input_sha256=_shard_sha256(ext_index, path)) for n, path in shards]
        if on_plan:
            on_plan(sum(s.get("samples", 0) for s in ext_index.get("shards", [])) or 0, len(jobs))
        if cfg.device == "cuda":
            n_workers, per_cpu, per_gpu = workers or max(n_gpus, 1), max(1, (os.cpu_count() or 1) // max(n_gpus, 1)), 1
        else:
            n_workers = workers or 1
            per_cpu, per_gpu = max(1, (os.cpu_count() or 1) // n_workers), 0
        result: RunResult = run_shards(
            jobs, TokenShardStats, actor_cls=TokenizeWorker, actor_args=(cfg, meta), workers=n_workers,
            address=address, num_cpus=per_cpu, num_gpus=per_gpu, max_retries=max_retries, progress=progress,
            in_process=in_process)
        stats = result.all_stats
        extra = {"extracted": str(extracted.resolve()), "complete": not result.failed and len(stats) == len(jobs),
                 "extracted_complete": ext_complete, "allow_incomplete": allow_incomplete,
                 "errors": [e for s in stats for e in s.error_rows],
                 "extracted_index_sha256": sha256_file(extracted / "index.json")}
        if stats:
            write_token_index(out, meta, [s.entry for s in stats], extra=extra)
    return TokenizeSummary(
        clips=sum(s.clips for s in stats), errors=sum(s.errors for s in stats), shards=len(jobs),
        shards_run=len(result.done), shards_skipped=len(result.skipped), shards_failed=result.failed,
        shards_stale=[shard_name(n) for n in result.stale],
        bytes=sum(s.bytes for s in stats), seconds=time.perf_counter() - t0,
        model_seconds=sum(s.model_seconds for s in result.done),
        clips_run=sum(s.clips for s in result.done), device=cfg.device, workers=n_workers, out=str(out))
