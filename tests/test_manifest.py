"""Manifest builders (folder, glob, VGGSound csv join), file round trips and the `avtok manifest` command."""

from __future__ import annotations

from pathlib import Path

import pytest
from avtok.cli.manifest import manifest as manifest_cmd
from avtok.pipeline.manifest import (
    ManifestError,
    ManifestRow,
    from_vggsound,
    from_videos,
    load_inputs,
    read_manifest,
    read_vggsound_csv,
    write_manifest,
)
from click.testing import CliRunner

CSV = '''---g-f_I2yQ,1,"people marching, drumming",test
-1pRmoJIGQc,10,"female speech, woman speaking",train
abcdefghijk,30,dog barking,train
missing0001,0,cat purring,test
'''


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_from_folder_recursive_and_ids(tmp_path):
    _touch(tmp_path / "b.mp4")
    _touch(tmp_path / "sub" / "a clip.MOV")
    _touch(tmp_path / "dup.mp4")
    _touch(tmp_path / "dup.webm")
    _touch(tmp_path / "notes.txt")
    rows = from_videos(tmp_path, split="train")
    assert [r.video_id for r in rows] == ["b", "dup.mp4", "dup.webm", "sub/a clip"]
    assert all(Path(r.path).is_absolute() and r.start_s == 0.0 and r.split == "train" for r in rows)
    assert rows[3].path == str((tmp_path / "sub" / "a clip.MOV").resolve())


def test_from_glob_and_errors(tmp_path):
    _touch(tmp_path / "x" / "one.mp4")
    _touch(tmp_path / "x" / "two.mkv")
    rows = from_videos(str(tmp_path / "x" / "*.mp4"))
    assert [r.video_id for r in rows] == ["one"]
    with pytest.raises(ManifestError, match="neither a folder"):
        from_videos(tmp_path / "nothing_here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no video files"):
        from_videos(tmp_path / "empty")


def test_vggsound_csv_and_join(tmp_path):
    csv_path = tmp_path / "vggsound.csv"
    csv_path.write_text(CSV)
    table = read_vggsound_csv(csv_path)
    assert len(table) == 4
    assert table[0].ytid == "---g-f_I2yQ" and table[0].start == 1 and table[0].label == "people marching, drumming"
    clips = tmp_path / "clips"
    _touch(clips / "---g-f_I2yQ_000001.mp4")  # {ytid}_{start:06d}
    _touch(clips / "-1pRmoJIGQc_10_20.mp4")  # {ytid}_{start}_{end}
    _touch(clips / "abcdefghijk_30000_40000.mp4")  # {ytid}_{start_ms}_{end_ms}
    _touch(clips / "unrelated.mp4")
    rows, missing = from_vggsound(csv_path, clips)
    assert [r.video_id for r in rows] == ["---g-f_I2yQ_000001", "-1pRmoJIGQc_000010", "abcdefghijk_000030"]
    assert rows[1].label == "female speech, woman speaking" and rows[1].split == "train" and rows[1].start_s == 0
    assert rows[2].path.endswith("abcdefghijk_30000_40000.mp4")
    assert [(m.ytid, m.start) for m in missing] == [("missing0001", 0)]


def test_bad_csv_row(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("abc,1,label\n")
    with pytest.raises(ManifestError, match="expected 4 fields"):
        read_vggsound_csv(p)


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_write_read_round_trip(tmp_path, ext):
    rows = [ManifestRow("a", str(tmp_path / "a.mp4"), 0.0, "x, y", "train"),
            ManifestRow("b", str(tmp_path / "b c.mp4"), 12.5, "", "")]
    path = write_manifest(rows, tmp_path / f"m{ext}")
    assert read_manifest(path) == rows
    assert load_inputs(path) == rows


def test_relative_paths_and_defaults(tmp_path):
    (tmp_path / "m.csv").write_text("video_id,path\nclip1,videos/c.mp4\n")
    (row,) = read_manifest(tmp_path / "m.csv")
    assert row == ManifestRow("clip1", str(tmp_path / "videos" / "c.mp4"), 0.0, "", "")


def test_duplicate_ids_rejected(tmp_path):
    rows = [ManifestRow("a", "/x.mp4"), ManifestRow("a", "/y.mp4")]
    with pytest.raises(ManifestError, match="appears twice"):
        write_manifest(rows, tmp_path / "m.csv")


def test_example_manifest_is_valid():
    rows = read_manifest(Path(__file__).resolve().parents[1] / "data_manifests" / "example.csv")
    assert [r.video_id for r in rows][:2] == ["-1pRmoJIGQc_000010", "0A1B2c3D4e5_000030"]
    assert rows[0].label == "female speech, woman speaking" and rows[2].start_s == 60.0


def test_cli_folder_and_vggsound(tmp_path):
    _touch(tmp_path / "clips" / "-1pRmoJIGQc_000010.mp4")
    (tmp_path / "vgg.csv").write_text(CSV)
    res = CliRunner().invoke(manifest_cmd, ["--videos", str(tmp_path / "clips"), "--out", str(tmp_path / "f.parquet")])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"wrote 1 rows to {tmp_path / 'f.parquet'}"
    out = tmp_path / "v.csv"
    res = CliRunner().invoke(manifest_cmd, ["--videos", str(tmp_path / "clips"), "--vggsound-csv",
                                            str(tmp_path / "vgg.csv"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote 1 rows" in res.output and "3 csv rows have no clip" in res.output
    assert len((tmp_path / "v.missing.csv").read_text().splitlines()) == 3
    assert read_manifest(out)[0].label == "female speech, woman speaking"
    res = CliRunner().invoke(manifest_cmd, ["--videos", str(tmp_path / "nope"), "--out", str(tmp_path / "n.csv")])
    assert res.exit_code != 0 and "neither a folder" in res.output
    # an existing manifest is kept unless --overwrite
    before = out.read_bytes()
    res = CliRunner().invoke(manifest_cmd, ["--videos", str(tmp_path / "clips"), "--out", str(out)])
    assert res.exit_code == 1 and "exists already; pass --overwrite" in res.output and out.read_bytes() == before
    res = CliRunner().invoke(manifest_cmd, ["--videos", str(tmp_path / "clips"), "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert [r.label for r in read_manifest(out)] == [""]  # the folder-mode manifest replaced the csv one


def test_bom_csv_and_start_values(tmp_path):
    clip = _touch(tmp_path / "a.mp4")
    (tmp_path / "bom.csv").write_bytes("\ufeffvideo_id,path,start_s\nclip,a.mp4,2.5\n".encode())
    assert read_manifest(tmp_path / "bom.csv") == [ManifestRow("clip", str(clip), 2.5, "", "")]
    for bad in ("inf", "-5", "nan", "1e400", "soon"):
        (tmp_path / "bad.csv").write_text(f"video_id,path,start_s\nclip,a.mp4,{bad}\n")
        with pytest.raises(ManifestError, match="row 1: start"):
            read_manifest(tmp_path / "bad.csv")
    with pytest.raises(ManifestError, match="finite number of seconds"):
        write_manifest([ManifestRow("c", str(clip), float("inf"))], tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()
    # the VGGSound csv: BOM tolerated, a negative or infinite start refused, binary refused
    (tmp_path / "vgg.csv").write_bytes("\ufeff".encode() + CSV.encode())
    assert read_vggsound_csv(tmp_path / "vgg.csv")[0].ytid == "---g-f_I2yQ"
    (tmp_path / "neg.csv").write_text("abcdefghijk,-5,dog,train\n")
    with pytest.raises(ManifestError, match="neg.csv:1: start"):
        read_vggsound_csv(tmp_path / "neg.csv")
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ManifestError, match="bin.csv: not a UTF-8 text csv"):
        read_vggsound_csv(tmp_path / "bin.csv")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ManifestError, match="bad.parquet: not a readable parquet"):
        read_manifest(tmp_path / "bad.parquet")
