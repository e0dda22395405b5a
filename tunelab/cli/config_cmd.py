"""``tunelab config explain [SECTION]``: every config field with its type, default and meaning."""

from __future__ import annotations

import shutil
import sys

import typer


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Inspect the run configuration schema.", no_args_is_help=True)

    @config_app.command("explain")
    def explain_cmd(
        section: str = typer.Argument(
            None, help="Only keys under this prefix: 'training', 'training.micro', 'method_args', 'method_args.dpo'."
        ),
    ):
        """Print every config field (and each method's method_args): key, type, default, meaning."""
        from tunelab.config_doc import explain, render_text

        # Plain text: a key is never split, whatever the width; descriptions wrap only on a terminal.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        rows = explain(section)
        typer.echo(render_text(rows, width) if rows else f"{section}: no fields (this method has no options)")

    app.add_typer(config_app, name="config")
