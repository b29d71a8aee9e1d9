"""`avtok weights`: the published-files table and `--check DIR` on local copies."""

from __future__ import annotations

import hashlib

import torch
from avtok.cli.main import cli
from avtok.model.tokenizers.vqgan import TAMING_F16_1024, VQGAN
from avtok.model.tokenizers.weights import PUBLISHED, md5_file
from click.testing import CliRunner


def test_table_lists_urls_and_md5s():
    res = CliRunner().invoke(cli, ["weights"])
    assert res.exit_code == 0, res.output
    assert "2021-05-19T22-16-54_vggsound_codebook.tar.gz" in res.output
    assert "md5:   7ea229427297b5d220fb1c80db32dbc5" in res.output
    assert "heibox.uni-heidelberg.de/f/140747ba53464f49b476" in res.output
    assert "vocoder/logs/vggsound/best_netG.pt" in res.output
    names = [e.name for e in PUBLISHED]
    assert len(names) == len(set(names))


def test_check_dir(tmp_path):
    data = b"not the published file"
    (tmp_path / "melception-21-05-10T09-28-40.pt").write_bytes(data)
    assert md5_file(tmp_path / "melception-21-05-10T09-28-40.pt") == hashlib.md5(data).hexdigest()
    ckpt = tmp_path / "vqgan_imagenet_f16_1024" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": VQGAN(TAMING_F16_1024).state_dict()}, ckpt)
    res = CliRunner().invoke(cli, ["weights", "--check", str(tmp_path)])
    assert res.exit_code == 1
    assert "OK       taming-vqgan-f16-1024: loads as taming (343 keys, codebook 1024" in res.output
    assert f"BAD      melception-vggsound: md5 {hashlib.md5(data).hexdigest()} != published" in res.output
    assert "MISSING  specvqgan-vggsound-codebook: not found" in res.output
    assert "1 ok, 1 bad, 4 missing" in res.output
