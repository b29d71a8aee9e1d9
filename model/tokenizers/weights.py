"""Where the published tokenizer, vocoder and metric weights come from, and a check of local copies.

Nothing is downloaded by avtok: `avtok weights` prints this table and `avtok weights --check DIR`
verifies the files a user fetched (md5 where the authors published one, and in every case that the
file loads as what it claims to be: key names and shapes of the published layout).
URLs and md5s are the ones the authors publish (taming-transformers and SpecVQGAN READMEs);
docs/formats.md, "Published weights", describes what each file holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..files import file_digest

_A3S = "https://a3s.fi/swift/v1/AUTH_a235c0f452d648828f745589cde1219a/specvqgan_public"
_SPECVQGAN_REPO = "https://github.com/v-iashin/SpecVQGAN/raw/33c601d"


@dataclass(frozen=True)
class WeightFile:
    """One published file: where to get it, where `--check DIR` looks for it, how it is verified."""

    name: str
    role: str
    url: str
    local: str  # path under DIR
    md5: str | None = None
    alt_urls: tuple[str, ...] = ()
    check: str | None = None  # "taming" | "specvqgan" | "melgan": must load as that
    notes: str = ""


PUBLISHED: tuple[WeightFile, ...] = (
    WeightFile(
        name="taming-vqgan-f16-1024", role="frame tokenizer: --image-tokenizer (kind taming)",
        url="https://heibox.uni-heidelberg.de/d/8088892a516d4e3baf92/files/?p=%2Fckpts%2Flast.ckpt&dl=1",
        alt_urls=("https://heibox.uni-heidelberg.de/f/140747ba53464f49b476/?dl=1",),
        local="vqgan_imagenet_f16_1024/checkpoints/last.ckpt", check="taming",
        notes="Lightning .ckpt, ~0.9 GB (includes loss.* and optimizer states); no md5 published"),
    WeightFile(
        name="taming-vqgan-f16-1024-config", role="its config (reference only; avtok hard-codes it)",
        url="https://heibox.uni-heidelberg.de/d/8088892a516d4e3baf92/files/?p=%2Fconfigs%2Fmodel.yaml&dl=1",
        alt_urls=("https://heibox.uni-heidelberg.de/f/6ecf2af6c658432c8298/?dl=1",),
        local="vqgan_imagenet_f16_1024/configs/model.yaml", notes="no md5 published"),
    WeightFile(
        name="specvqgan-vggsound-codebook", role="mel tokenizer archive",
        url=f"{_A3S}/models/2021-05-19T22-16-54_vggsound_codebook.tar.gz",
        local="2021-05-19T22-16-54_vggsound_codebook.tar.gz", md5="7ea229427297b5d220fb1c80db32dbc5",
        notes="unpack with `tar xzf` in DIR"),
    WeightFile(
        name="specvqgan-vggsound-codebook-ckpt", role="mel tokenizer: --audio-tokenizer (kind specvqgan)",
        url="(inside the archive above)", local="2021-05-19T22-16-54_vggsound_codebook/checkpoints/last.ckpt",
        check="specvqgan", notes="the README trains from checkpoints/epoch_39.ckpt, the demo uses last.ckpt"),
    WeightFile(
        name="specvqgan-melgan-vggsound", role="vocoder: avtok generate --vocoder",
        url=f"{_SPECVQGAN_REPO}/vocoder/logs/vggsound/best_netG.pt",
        alt_urls=(f"{_A3S}/melgan_ckpt/netG.pt",),
        local="vocoder/logs/vggsound/best_netG.pt", check="melgan",
        notes="plain state dict committed in SpecVQGAN (git, commit 33c601d); the a3s netG.pt is the "
              "continue-training checkpoint; no md5 published"),
    WeightFile(
        name="melception-vggsound", role="metrics: SpecVQGAN's Melception classifier (FID/IS/KL on mels)",
        url=f"{_A3S}/melception-21-05-10T09-28-40.pt", local="melception-21-05-10T09-28-40.pt",
        md5="a71a41041e945b457c7d3d814bbcf72d", notes="0.27 GB; state under key 'model'"),
)


def md5_file(path: str | os.PathLike) -> str:
    """Hex md5 of a file (the checksum the published weights are listed with)."""
    return file_digest(path, "md5")


@dataclass
class CheckResult:
    entry: WeightFile
    path: Path
    status: str  # "ok" | "missing" | "bad"
    detail: str


def _structural(kind: str) -> Callable[[Path], str]:
    def check(path: Path) -> str:
        if kind == "melgan":
            from avtok.model.vocoder import load_melgan

            gen = load_melgan(path)
            return f"loads as the MelGAN generator ({len(gen.state_dict())} tensors)"
        from . import load_tokenizer

        tok = load_tokenizer(path, kind)
        return f"loads as {kind} (343 keys, codebook {tok.codebook_size}, fingerprint {tok.fingerprint[:12]})"

    return check


def check_weights(folder: str | os.PathLike, progress: Callable[[WeightFile], None] | None = None) -> list[CheckResult]:
    """Verify every published file found under `folder` (at its `local` path): md5 when published, and
    that it loads as what it is. Missing files are reported, not errors."""
    folder = Path(folder)
    results = []
    for entry in PUBLISHED:
        path = folder / entry.local
        if progress:
            progress(entry)
        if not path.is_file():
            results.append(CheckResult(entry, path, "missing", f"not found (expected at {path})"))
            continue
        details = []
        status = "ok"
        if entry.md5:
            got = md5_file(path)
            if got == entry.md5:
                details.append("md5 ok")
            else:
                status = "bad"
                details.append(f"md5 {got} != published {entry.md5}")
        if entry.check and status == "ok":
            try:
                details.append(_structural(entry.check)(path))
            except Exception as exc:  # any load failure means this is not the published file
                status = "bad"
                details.append(f"does not load as {entry.check}: {exc}")
        if not entry.md5 and status == "ok":
            details.append("no md5 published")
        results.append(CheckResult(entry, path, status, "; ".join(details)))
    return results
