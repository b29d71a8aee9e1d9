"""`avtok weights`: where the published weights come from; `--check DIR` verifies local copies."""

from __future__ import annotations

import click

from .options import EXISTING_DIR


@click.command("weights")
@click.option("--check", "check_dir", default=None, type=EXISTING_DIR,
              help="Verify the files under DIR (md5 where published, and that each loads as what it is).")
def weights(check_dir) -> None:
    """Print the published tokenizer / vocoder / metric files avtok can use (URL, md5, where to put
    them under a folder), or verify local copies with --check DIR. avtok never downloads anything."""
    from avtok.model.tokenizers.weights import PUBLISHED, check_weights

    if check_dir is None:
        for e in PUBLISHED:
            click.echo(f"{e.name}\n  use:   {e.role}\n  url:   {e.url}")
            for alt in e.alt_urls:
                click.echo(f"  alt:   {alt}")
            click.echo(f"  md5:   {e.md5 or '(not published)'}\n  put:   DIR/{e.local}")
            if e.notes:
                click.echo(f"  note:  {e.notes}")
        click.echo("Then: avtok weights --check DIR")
        return
    results = check_weights(check_dir, progress=lambda e: click.echo(f"checking {e.name} ...", err=True))
    for r in results:
        click.echo(f"{r.status.upper():8s} {r.entry.name}: {r.detail}")
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "bad", "missing")}
    click.echo(f"{counts['ok']} ok, {counts['bad']} bad, {counts['missing']} missing under {check_dir}")
    if counts["bad"]:
        raise SystemExit(1)
