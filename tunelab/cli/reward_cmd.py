"""``tunelab reward score RUN --prompt P --completion C [--completion C2 ...] [--json]``."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    reward = typer.Typer(help="Use a reward model trained with method: reward.", no_args_is_help=True)

    @reward.command("score")
    def score_cmd(
        run: Path = typer.Argument(..., help="Run folder of a finished method: reward run (runs/NAME)."),
        prompt: str = typer.Option(..., "--prompt", help="The user prompt."),
        completion: list[str] = typer.Option(..., "--completion", help="A completion to score (repeatable)."),
        as_json: bool = typer.Option(False, "--json", help="Print {\"scores\": [...]} on stdout."),
    ):
        """Score prompt/completion pairs with a trained reward model (higher = preferred)."""
        from rich.table import Table

        from tunelab.methods.reward import score
        from tunelab.utils.log import console

        scores = score(run, [(prompt, c) for c in completion])
        if as_json:
            typer.echo(json.dumps({"scores": scores}))
            return
        table = Table(title=f"reward model {run}")
        table.add_column("completion")
        table.add_column("score", justify="right")
        for text, value in zip(completion, scores, strict=True):
            table.add_row(text, f"{value:.4f}")
        console.print(table)

    app.add_typer(reward, name="reward")
