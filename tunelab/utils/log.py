"""One rich console for all of tunelab's human-facing output (stderr keeps stdout clean for --json).

Two rules hold for everything printed through it, on a terminal, in a pipe or in a CI log:

* a line of text is printed whole. Rich hard-wraps text at the console width (80 columns when
  stderr is not a terminal, or ``COLUMNS``), which split ``FILE line 11:`` into ``FILE line`` /
  ``11:`` and cut ``fix:`` hints in half, so grepping a log or copying a path failed. Plain text
  (``str``/``Text``) is therefore soft-wrapped: the terminal folds long lines for display, the
  bytes keep one line. Tables and other layouts still fit themselves to the width.
* ``NO_COLOR`` (any non-empty value, https://no-color.org) turns off every ANSI code, bold and
  underline included; every fact is carried by words or markers, never by a style alone.
"""

from __future__ import annotations

import logging
import os

from rich.console import Console
from rich.text import Text


def no_color(environ: dict[str, str] | None = None) -> bool:
    """True when the user asked for output without colour (``NO_COLOR`` set and non-empty)."""
    return (os.environ if environ is None else environ).get("NO_COLOR", "") != ""


class LineConsole(Console):
    """A Console whose ``print`` of plain text never inserts line breaks of its own."""

    def print(self, *objects, soft_wrap: bool | None = None, **kwargs) -> None:
        if soft_wrap is None and all(isinstance(o, str | Text) for o in objects):
            soft_wrap = True
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)


def make_console(environ: dict[str, str] | None = None) -> LineConsole:
    """The stderr console; without colour system (hence no escape codes at all) under ``NO_COLOR``."""
    return LineConsole(stderr=True, color_system=None if no_color(environ) else "auto")


def error_text(message: str, label: str = "error", style: str = "bold red") -> Text:
    """``label: message`` as Text: the message is not parsed as markup (a ``[x]`` in it stays)."""
    return Text.assemble((f"{label}:", style), " ", message)


class LineHandler(logging.Handler):
    """``level: message`` lines through :data:`console`, whole like every other line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            style = "bold red" if record.levelno >= logging.ERROR else "yellow"
            console.print(error_text(self.format(record), record.levelname.lower(), style), highlight=False)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


console = make_console()
logger = logging.getLogger("tunelab")
if not logger.handlers:
    logger.addHandler(LineHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False
