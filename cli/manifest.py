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
@click.option("--overwrite", is_flag=True, help="Replace --out (and <out>.missing.csv) if they exist (default: refuse).")
@click.option("--label", default="", help="Label for every row (folder/glob mode only).")
@click.option("--split", default="", help="Split for every row (folder/glob mode only), e.g. train.")
def manifest(videos, vggsound_csv, out, overwrite, label, split) -> None:
    """Write a manifest for `avtok extract --videos MANIFEST`.

    Folder/glob mode: one row per video file, video_id = its path relative to the folder without the
    extension, start_s = 0. VGGSound mode: one row per csv row whose clip is in --videos, video_id =
    {ytid}_{start:06d}; rows whose clip is missing are counted and written to <out>.missing.csv.
    An existing --out is refused unless --overwrite.
    """
    from pathlib import Path

    from avtok.pipeline.manifest import (
        ManifestError,
        from_vggsound,
        from_videos,
        write_manifest,
        write_missing,
    )

    miss_path = Path(out).with_suffix(".missing.csv")
    try:
        for p in (Path(out), miss_path) if vggsound_csv else (Path(out),):
            if p.exists() and not overwrite:
                raise ManifestError(f"{p}: exists already; pass --overwrite to replace it")
        if vggsound_csv:
            rows, missing = from_vggsound(vggsound_csv, videos)
        else:
            rows, missing = from_videos(videos, label=label, split=split), []
        path = write_manifest(rows, out, overwrite=overwrite)
        if missing:
            write_missing(missing, miss_path, overwrite=overwrite)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # unwritable folder, disk full: one line naming the file
        raise click.ClickException(f"{exc.filename or out}: cannot write ({exc.strerror or exc})") from exc
    line = f"wrote {len(rows)} rows to {path}"
    if vggsound_csv:
        line += f"; {len(missing)} csv rows have no clip"
        if missing:
            shown = ", ".join(f"{r.ytid}_{r.start:06d}" for r in missing[:3])
            line += f" (e.g. {shown}; all listed in {miss_path})"
    click.echo(line)
