"""Input and output guardrails of the server (the checks live in :mod:`tunelab.security.guardrails`).

A guardrail sees each request's messages before generation and the answer as it grows. Each
check acts as configured: a ``block`` on the input is a 400 with ``code="content_policy_violation"``
and ``param`` naming the guardrail; a ``block`` on the output stops the generation with
``finish_reason="content_filter"`` and withholds the refused text; ``redact`` masks (or, for
special tokens, escapes) the spans; ``flag`` only records the event. Every event is logged and
counted in ``/metrics`` (``tunelab_guardrail_events_total{guardrail,stage,action}``).

Register a guardrail by name in :data:`GUARDRAILS`; ``tunelab serve --guardrail NAME[=ACTION]``
picks it and ``tunelab serve --list-guardrails`` lists them. The registry, :class:`Verdict` and
the protocols are those of :mod:`tunelab.security.guardrails`, re-exported here.
"""

from __future__ import annotations

from tunelab.security.guardrails import (
    ALLOW,
    GUARDRAILS,
    Guardrail,
    GuardrailChain,
    Scanner,
    Verdict,
    build_guardrails,
    first_refusal,
    register_guardrail,
)

__all__ = [
    "ALLOW",
    "GUARDRAILS",
    "Guardrail",
    "GuardrailChain",
    "Scanner",
    "Verdict",
    "build_guardrails",
    "first_refusal",
    "guardrail_rows",
    "register_guardrail",
    "special_tokens_of",
]


def guardrail_rows() -> list[tuple[str, str, str, str]]:
    """``(name, stage, default action, description)`` of every registered guardrail."""
    rows = []
    for name in GUARDRAILS.names():
        factory = GUARDRAILS.get(name)
        stage = getattr(factory, "stage", "input+output")
        action = getattr(factory, "default_action", "block")
        doc = getattr(factory, "description", None) or (factory.__doc__ or "").strip().split("\n")[0]
        rows.append((name, stage, action, doc))
    return rows


def special_tokens_of(backend: object) -> list[str]:
    """The special-token strings of ``backend``'s tokenizer (none for a backend without one),
    so the ``special_tokens`` guardrail escapes this model's own control tokens too."""
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        return []
    tokens = list(getattr(tokenizer, "all_special_tokens", None) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tokens += [str(t) for t in added.values() if getattr(t, "special", False)]
    return [t for t in dict.fromkeys(tokens) if t.strip()]
