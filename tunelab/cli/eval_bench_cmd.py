"""``tunelab eval perplexity`` and ``tunelab eval harness``: standard metrics and benchmarks.

:func:`add_commands` is called by :mod:`tunelab.cli.eval_cmd` on its ``eval`` group.
"""

from __future__ import annotations

import typer


def add_commands(eval_app: typer.Typer) -> None:
    """Add ``perplexity`` and ``harness`` to the ``tunelab eval`` group."""
