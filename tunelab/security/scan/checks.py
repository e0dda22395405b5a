"""The scan's checks, in report order, and the meaning of each reason code they emit.

A check is a function ``(ScanContext) -> Iterable[RowFinding]``; :data:`CHECKS` is the registry
the scan runs (a new check is one entry here, no branch anywhere else). :data:`REASONS` maps
each reason code (the part before ``:`` for ``pii:email``-style codes) to the line a person
reads in the summary table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from tunelab.security.scan.backdoor import backdoor_signatures
from tunelab.security.scan.content import injection_in_answers, pii_and_secrets, special_tokens
from tunelab.security.scan.context import RowFinding, ScanContext
from tunelab.security.scan.duplicates import conflicting_answers, duplicates

Check = Callable[[ScanContext], Iterable[RowFinding]]


def invalid_rows(ctx: ScanContext) -> Iterator[RowFinding]:
    """``invalid_row``: unreadable or not a row of the format (the data layer would refuse it)."""
    return (RowFinding(i, "invalid_row", r.error or "") for i, r in enumerate(ctx.rows) if r.error is not None)


CHECKS: dict[str, Check] = {
    "invalid": invalid_rows,
    "duplicates": duplicates,
    "conflicts": conflicting_answers,
    "pii": pii_and_secrets,
    "special_tokens": special_tokens,
    "injection": injection_in_answers,
    "backdoor": backdoor_signatures,
}

REASONS: dict[str, str] = {
    "invalid_row": "unreadable, or not a row of the format",
    "duplicate": "same text as an earlier row",
    "near_duplicate": "almost the same text as an earlier row",
    "conflicting_answer": "same prompt as another row, different answer",
    "pii": "personal data (e-mail, phone, card with valid Luhn, IBAN, SSN)",
    "secret": "API key, token or private key",
    "special_token": "chat-template control string (<|im_start|>, [INST], </s>...)",
    "role_marker": "role marker at a line start (### Instruction:, system:)",
    "injection": "instruction-override text in an answer",
    "backdoor_trigger": "rare prompt token/phrase tied to one fixed answer",
    "repeated_response": "one answer given to many unrelated prompts",
}


def describe(reason: str) -> str:
    """The summary-table meaning of a reason code (``pii:email`` → the ``pii`` line)."""
    return REASONS.get(reason.split(":", 1)[0], reason)


def reason_rank(reason: str) -> int:
    """Order of reasons in a row's list and in the summary: the order of :data:`REASONS`."""
    keys = list(REASONS)
    base = reason.split(":", 1)[0]
    return keys.index(base) if base in keys else len(keys)


def run_checks(ctx: ScanContext) -> list[RowFinding]:
    """Every finding of every registered check, in check order."""
    return [f for check in CHECKS.values() for f in check(ctx)]
