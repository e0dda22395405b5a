"""Human summary of a finished run."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from tunelab.utils.log import console


def print_result(result) -> None:
    table = Table(title=f"run finished: {result.run_dir}", show_header=False)
    table.add_row("method", result.method)
    table.add_row("steps", str(result.steps) + (f" ({result.skipped_steps} skipped)" if result.skipped_steps else ""))
    if result.final_loss is not None:
        table.add_row("last train loss", f"{result.final_loss:.4f}")
    for key, value in result.val.items():
        table.add_row(key, f"{value:.4f}")
    table.add_row("tokens/s", f"{result.tokens_per_s:,.0f}")
    table.add_row("wall time", f"{result.wall_s:.1f} s")
    table.add_row("saved", result.output)
    plot = Path(result.run_dir) / "loss.png"
    if plot.exists():
        table.add_row("plot", str(plot))
    console.print(table)
