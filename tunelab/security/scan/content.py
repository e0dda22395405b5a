"""Row text checks: PII and secrets, special-token / role-marker strings, and injection text in
answers, with the detectors of :mod:`tunelab.security.patterns` (the same ones the server's
guardrails use, so "a card number" means one thing everywhere).

Why these in training data: a model memorizes and repeats rare strings it was trained on
(Carlini et al., 2021), so an e-mail or an API key in a row can come back out of the model; a
literal ``<|im_start|>`` in a row can be tokenized as the real control token and teach the model
to open or close turns inside text; and an answer that says "ignore previous instructions"
teaches the model to follow such text. Injection phrases are looked for in answers only: a
prompt that contains an attack and an answer that declines it is good safety data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache

from tunelab.security import patterns
from tunelab.security.scan.context import RowFinding, ScanContext

#: encoded payloads in answers are findings only when what they decode to is itself a finding.
DECODED_CHECKS = ("injection", "special_token")


def _spans(findings: list[patterns.Finding], reason_of) -> Iterator[tuple[str, str]]:
    seen = set()
    for f in findings:
        reason = reason_of(f)
        if reason not in seen:
            seen.add(reason)
            yield reason, f.match if len(f.match) <= 40 else f.match[:39] + "…"


def per_text(detect: Callable[[str], list[patterns.Finding]]) -> Callable[[str], list[patterns.Finding]]:
    """``detect`` run once per distinct text: repeated answers (labels, planted targets, templates)
    are common in training data, and the detectors are the slowest part of a scan."""
    return cache(detect)


def masked(value: str) -> str:
    """Enough of a PII or secret value to find it in the row, not enough to reuse it from a log."""
    return value[:1] + "***" if len(value) <= 8 else f"{value[:4]}…{value[-3:]}"


def pii_and_secrets(ctx: ScanContext) -> Iterator[RowFinding]:
    """``pii:<kind>`` (email, phone, card, iban, ssn) and ``secret:<kind>`` (API keys, tokens, keys);
    the detail shows the value masked (a scan report is printed into logs)."""
    detect = per_text(lambda text: patterns.find_pii(text) + patterns.find_secrets(text))
    for i in ctx.valid:
        found = detect(ctx.rows[i].text)
        for reason, match in _spans(found, lambda f: f"{f.category}:{f.kind}"):
            yield RowFinding(i, reason, masked(match))


def special_tokens(ctx: ScanContext) -> Iterator[RowFinding]:
    """``special_token`` (``<|im_start|>``, ``[INST]``, ``</s>``...) and ``role_marker``
    (``### Instruction:``, ``system:`` at a line start) anywhere in the row."""
    detect = per_text(patterns.find_special_tokens)
    for i in ctx.valid:
        for reason, match in _spans(detect(ctx.rows[i].text), lambda f: f.category):
            yield RowFinding(i, reason, match)


def _injection(answers: str) -> list[patterns.Finding]:
    found = patterns.find_injection(answers)
    for enc in patterns.find_encoded(answers):
        if enc.kind == "rot13" or patterns.find_all(enc.decoded or "", DECODED_CHECKS):
            found.append(enc)
    return found


def injection_in_answers(ctx: ScanContext) -> Iterator[RowFinding]:
    """``injection``: an instruction-override phrase in an answer, plain or inside a base64/hex/rot13
    payload that decodes to one."""
    detect = per_text(_injection)
    for i in ctx.valid:
        if ctx.rows[i].answers:
            for _, match in _spans(detect(ctx.rows[i].answers), lambda f: "injection"):
                yield RowFinding(i, "injection", match)
