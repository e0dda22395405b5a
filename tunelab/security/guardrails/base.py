"""The guardrail contract: :class:`Verdict`, the scanner protocol and the name registry.

Why here and not in ``tunelab.serve``: the red-team runner, the dataset scan and plain Python
code use the same checks without a web server, so the contract is torch- and FastAPI-free;
``tunelab.serve.guardrails`` re-exports it (the registry object is the same).

A *scanner* is llm-guard's one-method shape: ``scan(text, context) -> Verdict``. Each one is
configured with an *action*: ``block`` refuses the request (or stops the answer), ``flag`` lets
it through but records the event, ``redact`` lets it through with the offending spans masked
(or escaped, for special tokens). The older two-method :class:`Guardrail` (``check_input`` /
``check_output``) still works: a refusal from it is a block.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from tunelab.errors import ConfigError
from tunelab.registry import Registry

Action = Literal["block", "flag", "redact"]
Stage = Literal["input", "output"]
ACTIONS: tuple[str, ...] = ("block", "flag", "redact")


@dataclass(frozen=True)
class Verdict:
    """What a guardrail decided about one text.

    Attributes:
        allowed: False only when the text must not pass (a ``block``).
        reason: a short human sentence; never the matched PII or secret itself.
        sanitized: the text to use instead (redacted / escaped), or None when unchanged.
        score: 0..1, how sure the check is that the text is bad (1 for a pattern match).
        code: a stable machine code of the finding (``prompt_injection``, ``pii``...).
        guardrail: the name of the guardrail that decided.
        action: the action taken (``block``, ``flag``, ``redact``), or ``""`` when nothing was found.
        events: for a chain, every verdict of its guardrails that found something.
    """

    allowed: bool
    reason: str = ""
    sanitized: str | None = None
    score: float = 0.0
    code: str = ""
    guardrail: str = ""
    action: str = ""
    events: tuple[Verdict, ...] = field(default=(), compare=False)

    @property
    def triggered(self) -> bool:
        """True when a check found something (whatever the action)."""
        return bool(self.action) or not self.allowed


ALLOW = Verdict(True)


@dataclass(frozen=True)
class ScanContext:
    """What a check may know besides the text: the system prompt (for leakage), the canary
    tokens it must never repeat, the tokenizer's special-token strings and the message role."""

    system: str = ""
    canaries: tuple[str, ...] = ()
    special_tokens: tuple[str, ...] = ()
    role: str = "user"


@runtime_checkable
class Scanner(Protocol):
    """One check with one action: ``scan(text, context) -> Verdict``."""

    name: str
    stage: Stage
    action: Action
    description: str

    def scan(self, text: str, context: ScanContext) -> Verdict: ...


class Guardrail(Protocol):
    """The original two-method hook, still accepted by the server and the chain."""

    name: str

    def check_input(self, text: str) -> Verdict: ...

    def check_output(self, text: str) -> Verdict: ...


#: name → factory (a scanner class, or any callable returning a Scanner / Guardrail).
GUARDRAILS: Registry[Callable[..., Scanner | Guardrail]] = Registry("guardrail", key="--guardrail")


def register_guardrail(name: str, factory: Callable[..., Scanner | Guardrail]) -> None:
    """Make ``factory`` available as ``tunelab serve --guardrail NAME``.

    Raises:
        DuplicateNameError: ``name`` is already registered.
    """
    GUARDRAILS.register(name, factory)


def build_guardrail(name: str, action: str | None = None, options: dict | None = None,
                    where: str = "--guardrail") -> Scanner | Guardrail:
    """One guardrail by name, with an action and options checked against its factory.

    Raises:
        ConfigError: unknown name, action or option (naming ``where``, the flag or file key).
    """
    factory = GUARDRAILS.get(name)
    kwargs = dict(options or {})
    if action is not None:
        if action not in ACTIONS:
            raise ConfigError(f"{where}: unknown action {action!r} for guardrail {name!r}; "
                              f"choose one of {', '.join(ACTIONS)}\n  fix: {where} {name}=block")
        kwargs["action"] = action
    if kwargs:
        accepted = _options_of(factory)
        bad = sorted(set(kwargs) - accepted)
        if bad:
            valid = ", ".join(sorted(accepted)) or "none"
            raise ConfigError(f"{where}: guardrail {name!r} has no option {bad[0]!r} (options: {valid})\n"
                              f"  fix: remove {bad[0]!r} or use one of the options listed")
    return factory(**kwargs)


def build_guardrails(names: Sequence[str]) -> list[Scanner | Guardrail]:
    """Instantiate guardrails by name (``NAME`` or ``NAME=ACTION``); every name is checked
    before any is built, and an unknown one lists the registered ones and the closest."""
    specs = [parse_spec(n) for n in names]
    for name, _ in specs:
        GUARDRAILS.get(name)
    return [build_guardrail(name, action) for name, action in specs]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"pii=redact"`` → ``("pii", "redact")``; ``"pii"`` → ``("pii", None)``."""
    name, sep, action = spec.partition("=")
    if sep and not (name and action):
        raise ConfigError(f"--guardrail {spec!r}: expected NAME or NAME=ACTION\n  fix: --guardrail injection=block")
    return name.strip(), (action.strip() or None) if sep else None


def _options_of(factory: Callable) -> set[str]:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: no options known
        return set()
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def first_refusal(guardrails: Sequence[Scanner | Guardrail], text: str, *, output: bool) -> Verdict:
    """The first refusing verdict (or ALLOW) of ``guardrails`` on ``text`` (no context)."""
    for guard in guardrails:
        if isinstance(guard, Scanner):
            if guard.stage != ("output" if output else "input"):
                continue
            verdict = guard.scan(text, ScanContext())
        else:
            verdict = guard.check_output(text) if output else guard.check_input(text)
        if not verdict.allowed:
            return verdict
    return ALLOW
