"""``--quarantine OUT``: split the scanned file into clean and rejected rows, losing none.

``OUT/clean.jsonl`` holds every unflagged row and ``OUT/rejected.jsonl`` every flagged one, in
file order; a jsonl input's lines are copied as they are (so ``clean.jsonl`` trains exactly as
the original rows would; only an undecodable byte becomes U+FFFD), other formats are written
one JSON object per row. ``OUT/scan.json`` is the ``--json`` report, whose line numbers point
into the input file. The folder is written whole or not at all, and a non-empty OUT is refused
unless ``overwrite``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunelab.security.scan.report import ScanReport
from tunelab.utils.fsio import atomic_folder

CLEAN, REJECTED, REPORT = "clean.jsonl", "rejected.jsonl", "scan.json"


@dataclass
class Quarantine:
    """Where the rows went: ``clean + rejected == rows`` of the input."""

    folder: Path
    clean: int
    rejected: int


def write_quarantine(report: ScanReport, out: str | Path, overwrite: bool = False) -> Quarantine:
    """Write ``clean.jsonl``, ``rejected.jsonl`` and ``scan.json`` into ``out``.

    Raises:
        ConfigError: ``out`` is a file or a non-empty folder and ``overwrite`` is false.
    """
    flagged = report.flagged
    lines = {True: [], False: []}
    for i, row in enumerate(report.rows):
        lines[i in flagged].append(row.raw.raw)
    with atomic_folder(out, overwrite, option="--quarantine") as tmp:
        for name, rows in ((CLEAN, lines[False]), (REJECTED, lines[True])):
            (tmp / name).write_text("".join(f"{r}\n" for r in rows), encoding="utf-8")
        (tmp / REPORT).write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
    return Quarantine(Path(out), len(lines[False]), len(lines[True]))
