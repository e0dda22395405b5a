"""Input and output guardrail hooks (filled by tunelab.security; none by default).

A guardrail sees the request text before generation and the answer text as it grows. A
refused input is a 400 (``code="content_policy_violation"``); a refused output stops the
generation with ``finish_reason="content_filter"`` and withholds the refused text.
Register a guardrail by name in :data:`GUARDRAILS`; ``tunelab serve --guardrail NAME`` picks it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tunelab.registry import Registry


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""


ALLOW = Verdict(True)


class Guardrail(Protocol):
    name: str

    def check_input(self, text: str) -> Verdict: ...

    def check_output(self, text: str) -> Verdict: ...


#: name → factory; the security module registers its guardrails here (a name is taken once).
GUARDRAILS: Registry[Callable[[], Guardrail]] = Registry("guardrail", key="--guardrail")


def register_guardrail(name: str, factory: Callable[[], Guardrail]) -> None:
    """Make ``factory`` available as ``tunelab serve --guardrail NAME``.

    Raises:
        DuplicateNameError: ``name`` is already registered.
    """
    GUARDRAILS.register(name, factory)


def build_guardrails(names: Sequence[str]) -> list[Guardrail]:
    """Instantiate guardrails by name; an unknown name lists the registered ones and the closest."""
    factories = [GUARDRAILS.get(n) for n in names]  # every name checked before any is built
    return [factory() for factory in factories]


def first_refusal(guardrails: Sequence[Guardrail], text: str, *, output: bool) -> Verdict:
    """The first refusing verdict (or ALLOW) of ``guardrails`` on ``text``."""
    for guard in guardrails:
        verdict = guard.check_output(text) if output else guard.check_input(text)
        if not verdict.allowed:
            return verdict
    return ALLOW
