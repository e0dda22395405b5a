"""The scan as a pre-flight of ``tunelab train`` and ``tunelab data inspect``: one line, never fatal.

Why never fatal: a finding is a reason to look, not proof (a support dataset may hold a real
company e-mail on purpose), so the run goes on and the line says how many rows to look at and
which command lists them. A file the scan cannot read is left to the data layer, whose error
names the file and line.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from tunelab.data.prepare import PREPARED_MARKER
from tunelab.errors import TunelabError
from tunelab.security.scan.report import ScanReport


def preflight_report(path: str | Path | None, format: str = "auto", columns: dict[str, str] | None = None
                     ) -> ScanReport | None:
    """The scan of a training file, or None when there is nothing to scan (no path, an already
    prepared folder) or the file cannot be read (the data layer reports that itself)."""
    from tunelab.security.scan import scan_file

    if not path or (Path(path) / PREPARED_MARKER).exists():
        return None
    try:
        return scan_file(path, format, columns)
    except TunelabError:
        return None


def preflight_line(path: str | Path | None, format: str = "auto", columns: dict[str, str] | None = None) -> str | None:
    """``security scan: 3 of 200 rows flagged (...); see them with: tunelab scan PATH`` (None: nothing scanned)."""
    report = preflight_report(path, format, columns)
    if report is None:
        return None
    line = f"security scan of {path}: {report.one_line()}"
    if report.findings:
        flags = "".join(f" --column {shlex.quote(f'{k}={v}')}" for k, v in (columns or {}).items())
        fmt = f" --format {format}" if format != "auto" else ""
        line += f"; list them with: tunelab scan {shlex.quote(str(path))}{fmt}{flags}"
    return line


def print_preflight(path: str | Path | None, format: str = "auto", columns: dict[str, str] | None = None) -> None:
    """Print :func:`preflight_line` (if anything was scanned) through the console."""
    from rich.markup import escape

    from tunelab.utils.log import console

    line = preflight_line(path, format, columns)
    if line is not None:
        console.print(escape(line), highlight=False)
