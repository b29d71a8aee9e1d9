"""The one `Error:` line a command prints for a failure the user can fix (no traceback)."""

from __future__ import annotations

import click


def user_error(e: BaseException) -> click.ClickException:
    """A ClickException with the first line of `e`'s message (click prints `Error: ...` and exits 1)."""
    text = str(e).strip()
    return click.ClickException(text.splitlines()[0] if text else type(e).__name__)
