"""The progress bar, error handling and exit codes shared by the shard-runner commands (extract, tokenize).

Exit codes: 0 every shard finished (videos that cannot be decoded are error rows, not failures);
1 an error before or while running (one `Error:` line: bad input, a locked or foreign --out, an
unreachable --address); 2 a usage error (click); 3 some shards failed after their retries (the
finished ones are kept: re-run the same command to retry the rest); 130 interrupted (Ctrl-C).
"""

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
    from avtok.model.files import FolderLockedError
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
    except (ValueError, FolderLockedError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # e.g. --out under a file, a full disk: name the file, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        raise click.ClickException(f"{where}{exc.strerror or exc}") from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished shards are kept; run the same command again to finish", err=True)
        raise SystemExit(130) from None
    finally:
        bar.close()


EXIT_SHARDS_FAILED = 3


def finish(summary: Any) -> None:
    """Print the run's summary line; exit EXIT_SHARDS_FAILED when some shards failed."""
    click.echo(summary.line())
    if summary.shards_failed:
        click.echo(f"Error: {len(summary.shards_failed)} shard(s) failed; run the same command again to retry them",
                   err=True)
        raise SystemExit(EXIT_SHARDS_FAILED)
