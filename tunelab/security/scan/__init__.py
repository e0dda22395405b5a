"""``tunelab scan``: find poisoned, duplicated, leaky or malformed rows in a dataset, no model needed.

Per row it reports exact and near-duplicates, the same prompt with conflicting answers, PII and
secrets, special-token and role-marker strings, instruction-injection text in answers, and
backdoor signatures (a rare prompt token or phrase tied to one fixed answer; one answer given to
many unrelated prompts). ``--quarantine`` splits the file into clean and rejected rows.

Modules: :mod:`.rows` (reading any data-layer format into prompt/answer/text with file lines),
:mod:`.text` (normalized words, n-grams, shingles), :mod:`.minhash` (near-duplicate groups in
O(n)), :mod:`.duplicates`, :mod:`.content`, :mod:`.backdoor` (the checks), :mod:`.checks` (their
registry and reason codes), :mod:`.report`, :mod:`.quarantine`, :mod:`.preflight`.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunelab.security.scan.checks import CHECKS, REASONS, run_checks
from tunelab.security.scan.context import RowFinding, ScanContext, ScanSettings
from tunelab.security.scan.report import ReasonSummary, ScanReport
from tunelab.security.scan.rows import ScanRow, read_scan_rows

__all__ = [
    "CHECKS",
    "REASONS",
    "ReasonSummary",
    "RowFinding",
    "ScanReport",
    "ScanRow",
    "ScanSettings",
    "scan_file",
    "scan_rows",
]


def scan_rows(rows: list[ScanRow], settings: ScanSettings | None = None, path: str = "", format: str = ""
              ) -> ScanReport:
    """Run every check on already-read rows."""
    start = time.perf_counter()
    findings = run_checks(ScanContext(rows, settings))
    return ScanReport(path, format, rows, findings, time.perf_counter() - start)


def scan_file(path: str | Path, format: str = "auto", columns: dict[str, str] | None = None,
              settings: ScanSettings | None = None) -> ScanReport:
    """Read ``path`` (any format the data layer reads) and scan every row.

    Raises:
        DataError: the file cannot be read at all (missing, empty, unknown type or format);
            a bad row is a finding, never an error.
    """
    start = time.perf_counter()
    rows, name = read_scan_rows(path, format, columns)
    report = scan_rows(rows, settings, str(path), name)
    report.seconds = time.perf_counter() - start
    return report
