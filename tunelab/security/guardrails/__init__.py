"""Guardrails for a served model (and any Python code): checks on the user's input and on
the model's answer, each configured as ``block``, ``flag`` or ``redact``.

    from tunelab.security.guardrails import GuardrailChain

    chain = GuardrailChain.from_specs(["all"])            # every built-in check, default actions
    chain.scan_input(user_text, system=system_prompt)     # -> Verdict(allowed, reason, sanitized, ...)
    chain.scan_output(answer, system=system_prompt)       # -> Verdict (sanitized: the redacted answer)

``tunelab serve --guardrail injection=block --guardrail pii=redact`` (or ``--guardrails-config
FILE``) runs the same chain on every request; ``--list-guardrails`` lists the checks.
"""

from tunelab.security.guardrails.base import (
    ACTIONS,
    ALLOW,
    GUARDRAILS,
    Guardrail,
    ScanContext,
    Scanner,
    Verdict,
    build_guardrail,
    build_guardrails,
    first_refusal,
    register_guardrail,
)
from tunelab.security.guardrails.chain import GuardrailChain, InputResult, OutputMonitor
from tunelab.security.guardrails.config import chain_from_cli, load_guardrail_config
from tunelab.security.guardrails.scanners import BUILTIN, PatternScanner

__all__ = [
    "ACTIONS",
    "ALLOW",
    "BUILTIN",
    "GUARDRAILS",
    "Guardrail",
    "GuardrailChain",
    "InputResult",
    "OutputMonitor",
    "PatternScanner",
    "ScanContext",
    "Scanner",
    "Verdict",
    "build_guardrail",
    "build_guardrails",
    "chain_from_cli",
    "first_refusal",
    "load_guardrail_config",
    "register_guardrail",
]
