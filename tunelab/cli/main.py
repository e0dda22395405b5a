"""Entry point of the ``tunelab`` command.

Each subcommand lives in its own module and registers itself on :data:`app` through
:func:`register`; the list below is the explicit registry of subcommand modules.
Any :class:`~tunelab.errors.TunelabError` becomes a one-paragraph message and exit code 2,
printed whole (never wrapped, never parsed as markup) so its ``FILE line N`` and ``fix:`` lines
survive a pipe, a CI log or a narrow terminal.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from tunelab.errors import TunelabError

app = typer.Typer(
    name="tunelab",
    help="Plan, fine-tune, align, optimize, evaluate, secure and serve LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Explicit registry of subcommand modules (each defines register(app)).
SUBCOMMANDS = [
    "tunelab.cli.config_cmd",
    "tunelab.cli.train_cmd",
    "tunelab.cli.quickstart_cmd",
    "tunelab.cli.plan_cmd",
    "tunelab.cli.data_cmd",
    "tunelab.cli.export_cmd",
    "tunelab.cli.reward_cmd",
    "tunelab.cli.serve_cmd",
    "tunelab.cli.chat_cmd",
    "tunelab.cli.examples_cmd",
    "tunelab.cli.scan_cmd",
    "tunelab.cli.redteam_cmd",
    "tunelab.cli.prune_cmd",
    "tunelab.cli.draft_cmd",
    "tunelab.cli.eval_cmd",
    "tunelab.cli.arena_cmd",
    "tunelab.cli.demo_cmd",
]


def _load_subcommands() -> None:
    """Register every subcommand on :data:`app`, once per process: ``register`` appends to typer's
    command list, so a second call would double every command and each later ``main()`` (tests and
    notebooks call it many times) would build and search an ever longer command table."""
    if app.registered_commands or app.registered_groups:
        return
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).register(app)


# ``--help`` off a terminal: rich would lay it out at 80 columns (or COLUMNS), squeezing each
# option's description into a narrow column of a pipe, a pager or a CI log; this is wide enough
# for the longest option + description of every command on one line.
HELP_WIDTH_OFF_TERMINAL = 200


def _configure_help() -> dict:
    """Typer's help console: wide when stdout is not a terminal, no escape codes under NO_COLOR.

    Returns click context settings: the same width for click's own usage line. An explicit
    ``TERMINAL_WIDTH`` (typer's own setting) wins.
    """
    from typer import rich_utils

    from tunelab.utils.log import no_color

    if no_color():
        rich_utils.COLOR_SYSTEM = None
    if os.environ.get("TERMINAL_WIDTH") is not None:
        return {}
    on_terminal = getattr(sys.stdout, "isatty", lambda: False)()
    rich_utils.MAX_WIDTH = None if on_terminal else HELP_WIDTH_OFF_TERMINAL
    width = HELP_WIDTH_OFF_TERMINAL
    return {} if on_terminal else {"terminal_width": width, "max_content_width": width}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (used by tests and by the console script, which enters through
    tunelab/cli/entry.py to pick the allocator first)."""
    from tunelab.utils.allocator import prefer_huge_pages
    from tunelab.utils.log import console, error_text

    prefer_huge_pages()  # before any command imports torch (tunelab/utils/allocator.py)

    _load_subcommands()
    width = _configure_help()
    try:
        # without standalone mode click returns typer.Exit(code)'s code instead of raising it
        code = app(args=argv if argv is not None else sys.argv[1:], standalone_mode=False, **width)
    except TunelabError as err:
        console.print(error_text(str(err)), highlight=False)
        return err.exit_code
    except typer.Abort:
        console.print("[yellow]aborted[/yellow]")
        return 130
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130
    except Exception as err:  # click usage errors carry their own exit code
        import click

        if isinstance(err, click.exceptions.Exit):
            return err.exit_code
        if isinstance(err, click.ClickException):
            err.show()
            return err.exit_code
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    from tunelab.cli.entry import main as entry_main  # the allocator first, as the console script

    sys.exit(entry_main())
