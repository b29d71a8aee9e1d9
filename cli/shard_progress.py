"""The progress bar and error handling shared by the shard-runner commands (extract, tokenize)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def run_sharded(desc: str, counts: Callable[[dict], tuple[int, int]],
                run: Callable[[Callable[..., None], Callable[[int, int], None]], Any]) -> Any:
    """Call `run(progress, on_plan)` behind a tqdm bar (clips/s, errors so far, ETA) and return its summary.

    `counts(stats)` gives (clips, errors) of a finished shard from its stats, which replace what the
    shard reported row by row (a retried shard may have reported rows twice). ValueError from `run`
    becomes a one-line CLI error; Ctrl-C keeps finished shards and exits 130.
    """
    from tqdm import tqdm

    bar = tqdm(total=0, unit="clip", dynamic_ncols=True, desc=desc)
    shown: dict[int, list[int]] = {}  # shard -> [clips, errors] already on the bar
    errors = 0

    def on_plan(total: int, shards: int) -> None:
        bar.total = total
        bar.set_description(f"{desc} ({shards} shards)")
        bar.refresh()

    def progress(ev) -> None:
        nonlocal errors
        seen = shown.setdefault(ev.shard, [0, 0])
        n, e = ev.rows, ev.errors
        if ev.shard_done is not None:
            clips, errs = counts(ev.shard_done)
            n, e = clips - seen[0], errs - seen[1]
        seen[0] += n
        seen[1] += e
        errors += e
        if n or e:
            bar.update(n)
            bar.set_postfix(errors=errors, refresh=False)
        if ev.failed:
            tqdm.write(f"shard {ev.shard} failed: {ev.failed}")

    try:
        return run(progress, on_plan)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished shards are kept; run the same command again to finish", err=True)
        raise SystemExit(130) from None
    finally:
        bar.close()
