"""`avtok manifest`: build the clip list (video_id, path, start_s, label, split) that `extract` reads."""

from __future__ import annotations

import click

from .options import EXISTING_FILE, OUT_FILE


@click.command("manifest")
@click.option("--videos", required=True,
              help="A folder of videos (searched recursively) or a quoted glob; with --vggsound-csv, the folder "
                   "of downloaded clips named {ytid}_{start:06d}.mp4 or {ytid}_{start}_{end}.mp4.")
@click.option("--vggsound-csv", type=EXISTING_FILE, default=None,
              help="The public VGGSound csv (ytid,start,label,split; no header): join it with the clips in --videos.")
@click.option("--out", required=True, type=OUT_FILE,
              help="Manifest to write: .parquet or .csv (with header).")
@click.option("--label", default="", help="Label for every row (folder/glob mode only).")
@click.option("--split", default="", help="Split for every row (folder/glob mode only), e.g. train.")
def manifest(videos, vggsound_csv, out, label, split) -> None:
    """Write a manifest for `avtok extract --videos MANIFEST`.

    Folder/glob mode: one row per video file, video_id = its path relative to the folder without the
    extension, start_s = 0. VGGSound mode: one row per csv row whose clip is in --videos, video_id =
    {ytid}_{start:06d}; rows whose clip is missing are counted and written to <out>.missing.csv.
    """
    from pathlib import Path

    from avtok.pipeline.manifest import ManifestError, from_vggsound, from_videos, write_manifest

    try:
        if vggsound_csv:
            rows, missing = from_vggsound(vggsound_csv, videos)
        else:
            rows, missing = from_videos(videos, label=label, split=split), []
        path = write_manifest(rows, out)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from exc
    line = f"wrote {len(rows)} rows to {path}"
    if vggsound_csv:
        line += f"; {len(missing)} csv rows have no clip"
        if missing:
            import csv

            miss_path = Path(out).with_suffix(".missing.csv")
            with open(miss_path, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f, lineterminator="\n")
                for r in missing:
                    w.writerow([r.ytid, r.start, r.label, r.split])
            shown = ", ".join(f"{r.ytid}_{r.start:06d}" for r in missing[:3])
            line += f" (e.g. {shown}; all listed in {miss_path})"
    click.echo(line)
