"""The result of a scan: per-row reasons (what ``--json`` prints) and a summary by reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunelab.security.scan.checks import describe, reason_rank
from tunelab.security.scan.context import RowFinding
from tunelab.security.scan.rows import ScanRow

EXAMPLES = 5  # example lines per reason in the summary


@dataclass
class ReasonSummary:
    """One line of the summary table."""

    reason: str
    meaning: str
    rows: int
    lines: list[int]  # the first EXAMPLES lines
    detail: str  # the first finding's detail


@dataclass
class ScanReport:
    """What :func:`~tunelab.security.scan.scan_file` found.

    Attributes:
        path: the file scanned.
        format: the row format read (detected or given).
        rows: every record of the file, in file order.
        findings: every finding (a row may have several).
        seconds: wall time of reading + checking.
    """

    path: str
    format: str
    rows: list[ScanRow]
    findings: list[RowFinding] = field(default_factory=list)
    seconds: float = 0.0

    def reasons(self) -> dict[int, list[str]]:
        """Row index → its distinct reason codes (in :data:`~tunelab.security.scan.checks.REASONS` order)."""
        out: dict[int, list[str]] = {}
        for f in self.findings:
            codes = out.setdefault(f.row, [])
            if f.reason not in codes:
                codes.append(f.reason)
        return {i: sorted(codes, key=lambda r: (reason_rank(r), r)) for i, codes in sorted(out.items())}

    @property
    def flagged(self) -> set[int]:
        """Indices of the rows with at least one finding."""
        return {f.row for f in self.findings}

    def to_json(self) -> dict[str, Any]:
        """Exactly ``{"rows": N, "flagged": [{"line": L, "reasons": [...]}, ...]}`` (file lines, 1-based)."""
        flagged = [{"line": self.rows[i].line, "reasons": codes} for i, codes in self.reasons().items()]
        return {"rows": len(self.rows), "flagged": flagged}

    def summary(self) -> list[ReasonSummary]:
        """One entry per reason code: how many rows, example lines, one detail."""
        by_reason: dict[str, list[RowFinding]] = {}
        for f in self.findings:
            by_reason.setdefault(f.reason, []).append(f)
        out = []
        for reason in sorted(by_reason, key=lambda r: (reason_rank(r), r)):
            rows = sorted({f.row for f in by_reason[reason]})
            out.append(ReasonSummary(reason, describe(reason), len(rows), [self.rows[i].line for i in rows[:EXAMPLES]],
                                     by_reason[reason][0].detail))
        return out

    def one_line(self) -> str:
        """``N of M rows flagged (3 duplicate, 1 pii:email, ...)`` for a pre-flight message."""
        if not self.findings:
            return f"{len(self.rows)} rows, nothing flagged"
        counts = ", ".join(f"{s.rows} {s.reason}" for s in self.summary())
        return f"{len(self.flagged)} of {len(self.rows)} rows flagged ({counts})"
