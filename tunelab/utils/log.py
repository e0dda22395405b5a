"""One rich console for all of tunelab's human-facing output (stderr keeps stdout clean for --json)."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)
logger = logging.getLogger("tunelab")
if not logger.handlers:
    logger.addHandler(RichHandler(console=console, show_path=False, rich_tracebacks=False))
    logger.setLevel(logging.INFO)
    logger.propagate = False
