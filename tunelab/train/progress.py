"""The rich progress bar of a run: step, loss, tokens/s and ETA."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tunelab.utils.log import console


class StepProgress:
    def __init__(self, total: int, start: int):
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tok_s]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, loss="-", tok_s="-")

    def __enter__(self) -> StepProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def update(self, step: int, loss: float, tok_s: float) -> None:
        self._progress.update(self._task, completed=step, loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}")
