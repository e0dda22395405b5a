"""The ``tunelab`` console script and ``python -m tunelab``: choose the allocator first.

:func:`tunelab.utils.allocator.preload_allocator` may re-execute the process with tcmalloc
preloaded; doing it before the CLI's own imports (typer, rich, the subcommands) keeps what the
first, replaced process spends to the interpreter's start-up.
"""

from __future__ import annotations


def main() -> int:
    from tunelab.utils.allocator import preload_allocator

    preload_allocator()
    from tunelab.cli.main import main as cli_main

    return cli_main()
