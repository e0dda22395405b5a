"""Entry point of the ``tunelab`` command.

Each subcommand lives in its own module and registers itself on :data:`app` through
:func:`register`; the list below is the explicit registry of subcommand modules.
Any :class:`~tunelab.errors.TunelabError` becomes a one-paragraph message and exit code 2.
"""

from __future__ import annotations

import importlib
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
]


def _load_subcommands() -> None:
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (used by tests and the console script)."""
    from tunelab.utils.log import console

    _load_subcommands()
    try:
        app(args=argv if argv is not None else sys.argv[1:], standalone_mode=False)
    except TunelabError as err:
        console.print(f"[bold red]error:[/bold red] {err}", highlight=False)
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
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
