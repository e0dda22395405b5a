"""``tunelab config explain [SECTION]``: every config field with its type, default and meaning."""

from __future__ import annotations

import typer
from rich.table import Table

from tunelab.config import explain


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Inspect the run configuration schema.", no_args_is_help=True)

    @config_app.command("explain")
    def explain_cmd(section: str = typer.Argument(None, help="Only keys under this prefix, e.g. 'training'.")):
        """Print every config field: key path, type, default and what it does."""
        from tunelab.utils.log import console

        table = Table(title="tunelab run config", show_lines=False)
        for col in ("key", "type", "default", "meaning"):
            table.add_column(col, overflow="fold")
        for key, type_name, default, doc in explain(section):
            table.add_row(key, type_name, default, doc)
        console.print(table)

    app.add_typer(config_app, name="config")
