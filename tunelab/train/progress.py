"""Progress of a run: a rich bar on a terminal, plain lines in a log file or pipe.

A bar redraws itself with control codes, so when stderr is a file or pipe (CI logs, ``nohup``,
``make demo > log``) rich prints nothing until the end. There a run prints a plain line
instead (``step 5/30 loss 1.2345 tok/s 812 mfu 31.0% elapsed 0:00:12 ETA 0:01:00``) on the first and
last step and every N steps or every ``interval_s`` seconds, whichever comes first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tunelab.utils.log import console as default_console

T = TypeVar("T")
#: Plain lines per run at most from the step count (time may add more).
LINES = 10
#: A plain line at least this often, in seconds, however slow the steps are.
INTERVAL_S = 20.0


def clock_text(seconds: float) -> str:
    """``H:MM:SS``, as rich's elapsed and remaining columns print it."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainLines:
    """When to print a plain progress line, and its elapsed / ETA fields."""

    def __init__(
        self,
        total: int,
        start: int,
        *,
        every: int | None = None,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        deadline_s: float | None = None,
    ):
        """``deadline_s``: seconds from now at which a time budget stops the run (caps the ETA)."""
        self.total, self.start = total, start
        self.every = every or max(1, math.ceil((total - start) / LINES))
        self.interval_s, self.clock = interval_s, clock
        self.began = self.last = clock()
        self.deadline = None if deadline_s is None else self.began + deadline_s

    def due(self, done: int) -> bool:
        """True on the first and last step, every ``every`` steps, or after ``interval_s`` of silence."""
        now = self.clock()
        if done in (self.start + 1, self.total) or done % self.every == 0 or now - self.last >= self.interval_s:
            self.last = now
            return True
        return False

    def timing(self, done: int) -> str:
        elapsed = self.clock() - self.began
        per_step = elapsed / max(done - self.start, 1)
        eta = per_step * (self.total - done)
        if self.deadline is not None:  # the time budget ends the run first
            eta = min(eta, self.deadline - self.clock())
        return f"elapsed {clock_text(elapsed)} ETA {clock_text(eta)}"


def _plain(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


class StepProgress:
    """Training progress; a plain line every few steps when ``console`` is not a terminal."""

    def __init__(self, total: int, start: int, *, console: Console | None = None, **plain):
        self.console = console or default_console
        self.total = total
        self._lines = None if self.console.is_terminal else PlainLines(total, start, **plain)
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tok_s]} tok/s"),
            TextColumn("MFU {task.fields[mfu]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, loss="-", tok_s="-", mfu="-")

    def __enter__(self) -> StepProgress:
        if self._lines is None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._lines is None:
            self._progress.stop()

    def update(self, step: int, loss: float, tok_s: float, mfu: float | None = None) -> None:
        """``mfu``: model FLOPs utilisation of the step as a fraction (tunelab/train/flops.py)."""
        util = "-" if mfu is None else f"{100 * mfu:.1f}%"
        if self._lines is None:
            self._progress.update(self._task, completed=step, loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}", mfu=util)
        elif self._lines.due(step):
            mfu_text = "" if mfu is None else f" mfu {util}"
            text = f"step {step}/{self.total} loss {loss:.4f} tok/s {tok_s:.0f}{mfu_text} {self._lines.timing(step)}"
            _plain(self.console, text)


def track_items(items: Sequence[T], description: str, *, console: Console | None = None, **plain) -> Iterator[T]:
    """rich's ``track`` on a terminal; plain ``description i/n elapsed ... ETA ...`` lines elsewhere."""
    console = console or default_console
    if console.is_terminal:
        from rich.progress import track

        yield from track(items, description=description, console=console)
        return
    lines = PlainLines(len(items), 0, **plain)
    for i, item in enumerate(items, start=1):
        yield item
        if lines.due(i):
            _plain(console, f"{description} {i}/{len(items)} {lines.timing(i)}")
