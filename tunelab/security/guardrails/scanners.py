"""The built-in guardrails: four input checks and three output checks, each one pattern family.

Input (user and tool messages): ``injection`` (instruction-override phrases), ``special_tokens``
(chat-template control strings and role markers, escaped by default so a user cannot end their
turn or open a ``system`` one), ``encoded`` (base64 / hex / rot13 payloads hiding an injection
or a control string) and ``length``. Output: ``leakage`` (the system prompt or a canary
repeated), ``secrets`` and ``pii``.

Every check is a :class:`PatternScanner`: ``find`` returns :class:`Finding` spans, and the
shared ``scan`` turns them into a :class:`Verdict` for the configured action, so block / flag /
redact mean the same everywhere and the server's streaming monitor can redact by span.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import ClassVar

from tunelab.errors import ConfigError
from tunelab.security.guardrails.base import ALLOW, GUARDRAILS, Action, ScanContext, Stage, Verdict
from tunelab.security.patterns import (
    PII_DETECTORS,
    Finding,
    drop_overlaps,
    escape_token,
    find_encoded,
    find_injection,
    find_pii,
    find_secrets,
    find_special_tokens,
    looks_random,
    redact,
)

#: roles whose text comes from the (untrusted) user side of an application.
UNTRUSTED_ROLES = ("user", "tool", "function")


class PatternScanner:
    """Base of the built-in checks: subclasses set the class attributes and ``find``."""

    name: ClassVar[str]
    stage: ClassVar[Stage]
    code: ClassVar[str]
    description: ClassVar[str]
    default_action: ClassVar[Action]
    what: ClassVar[str]  # how a finding is described in a reason ("an instruction-override phrase")
    roles: ClassVar[tuple[str, ...]] = UNTRUSTED_ROLES
    label: ClassVar[str | None] = None  # what replaces a redacted span; None: the finding's kind, "[EMAIL]"
    #: run position in a chain: detectors before sanitizers, so escaping "<|im_start|>system" cannot
    #: hide a forged system turn from the injection check.
    order: ClassVar[int] = 50

    def __init__(self, action: Action | None = None):
        self.action: Action = action or self.default_action

    def find(self, text: str, context: ScanContext) -> list[Finding]:
        raise NotImplementedError

    def mask(self, finding: Finding) -> str:
        return self.label if self.label is not None else f"[{finding.kind.upper()}]"

    def applies_to(self, role: str) -> bool:
        return self.stage == "output" or role in self.roles

    def verdict(self, text: str, findings: Iterable[Finding]) -> Verdict:
        """The verdict of this check's action on ``findings`` (non-empty) in ``text``."""
        findings = list(findings)
        kinds = sorted({f.kind for f in findings})
        reason = f"{self.what} ({', '.join(kinds)})"
        sanitized = self.sanitize(text, findings) if self.action == "redact" else None
        return Verdict(self.action != "block", reason, sanitized, 1.0, self.code, self.name, self.action)

    def sanitize(self, text: str, findings: list[Finding]) -> str:
        return redact(text, findings, self.mask)

    def scan(self, text: str, context: ScanContext | None = None) -> Verdict:
        findings = self.find(text, context or ScanContext())
        return self.verdict(text, findings) if findings else ALLOW

    def __repr__(self) -> str:
        return f"{type(self).__name__}(action={self.action!r})"


@GUARDRAILS.register("injection", aliases=["prompt_injection"])
class InjectionScanner(PatternScanner):
    name, stage, code, default_action = "injection", "input", "prompt_injection", "block"
    description = "instruction-override phrases in user text ('ignore all previous instructions', 'you are now DAN')"
    what, label, order = "an instruction-override phrase", "[REDACTED]", 10

    def find(self, text: str, context: ScanContext) -> list[Finding]:
        return find_injection(text)

@GUARDRAILS.register("special_tokens", aliases=["special-tokens", "role_markers"])
class SpecialTokenScanner(PatternScanner):
    name, stage, code, default_action = "special_tokens", "input", "special_token", "redact"
    description = "chat-template control strings and role markers in user text; redact escapes them"
    what, order = "a chat-template control string or role marker", 30
    roles = ("user", "tool", "function", "assistant")

    def find(self, text: str, context: ScanContext) -> list[Finding]:
        return find_special_tokens(text, context.special_tokens)

    def mask(self, finding: Finding) -> str:
        return escape_token(finding.match)  # the words stay, the control token does not


@GUARDRAILS.register("encoded")
class EncodedScanner(PatternScanner):
    name, stage, code, default_action = "encoded", "input", "encoded_payload", "block"
    description = "base64 / hex / rot13 payloads that decode to an injection phrase or a control string"
    what, label, order = "an encoded payload hiding instructions", "[ENCODED]", 20

    def find(self, text: str, context: ScanContext) -> list[Finding]:
        # a readable base64 string alone is ordinary ("decode SGVsbG8="); one that smuggles an
        # override phrase or a control token past the plain-text checks is the attack
        return [f for f in find_encoded(text) if f.kind == "rot13" or (
            f.decoded and (find_injection(f.decoded) or find_special_tokens(f.decoded, context.special_tokens)))]

@GUARDRAILS.register("length")
class LengthScanner(PatternScanner):
    name, stage, code, default_action = "length", "input", "input_too_long", "block"
    description = "messages longer than max_chars (default 16000); redact truncates them"
    what, label, order = "a message over the length limit", "", 0

    def __init__(self, action: Action | None = None, max_chars: int = 16_000):
        super().__init__(action)
        self.max_chars = int(max_chars)

    def find(self, text: str, context: ScanContext) -> list[Finding]:
        if len(text) <= self.max_chars:
            return []
        return [Finding("length", f"{len(text)}>{self.max_chars}", self.max_chars, len(text), "")]


#: a secret the system prompt names: "the canary is ZX-1", "password: hunter2". The value must
#: look like a code (a digit or a capital) or end the sentence ("The password is swordfish."),
#: so "the password is required for login" names no secret.
_NAMED_SECRET = re.compile(
    r"(?i:\b(?:canary(?:\s+(?:token|code|word))?|secret(?:\s+(?:word|code|key|token))?|password|passphrase|code\s*word"
    r"|api\s+key|reference\s+code|access\s+code))\s*(?:is|:|=)\s*[\"'`]?"
    r"((?=[A-Za-z_\-]*[0-9A-Z])[A-Za-z0-9_\-]{4,64}|[a-z][a-z_\-]{3,63}(?=[\"'`]?\s*(?:[.,;!)\n]|$)))"
)
_WORD = re.compile(r"\w+")


@functools.lru_cache(maxsize=256)
def _secrets_of(system: str, canaries: tuple[str, ...], min_words: int):
    """``(canaries, their regex or None, system word k-grams, k)`` of a system prompt, computed once per
    prompt (a streamed answer is checked many times against the same one). A system prompt
    under four words is too short to tell a leak from a coincidence: no k-grams."""
    words = tuple(sorted({c for c in (*canaries, *canaries_of(system)) if c}, key=len, reverse=True))
    rx = re.compile("|".join(re.escape(c) for c in words), re.I) if words else None
    sys_words = [w.lower() for w in _WORD.findall(system)]
    k = min(min_words, len(sys_words))
    grams = frozenset(tuple(sys_words[i : i + k]) for i in range(len(sys_words) - k + 1)) if k >= 4 else frozenset()
    return words, rx, grams, k


def _spelled_out(text: str, canaries: tuple[str, ...]) -> list[Finding]:
    """Canaries written with separators between their characters ("Z E B R A - 4 4 7 1", one
    letter per line): matched on the letters and digits of ``text`` alone, for canaries of six
    or more of them (shorter ones would match across ordinary words)."""
    index = [i for i, c in enumerate(text) if c.isalnum()]
    squeezed = "".join(text[i] for i in index)
    found = []
    for canary in canaries:
        plain = "".join(c for c in canary if c.isalnum())
        if len(plain) < 6:
            continue
        for m in re.finditer(re.escape(plain), squeezed, flags=re.IGNORECASE):
            start, end = index[m.start()], index[m.end() - 1] + 1
            found.append(Finding("leakage", "spelled_canary", start, end, text[start:end]))
    return found


def canaries_of(system: str) -> set[str]:
    """Tokens of a system prompt it must never repeat: named secrets and random-looking words."""
    found = {m.group(1) for m in _NAMED_SECRET.finditer(system)}
    found |= {w for w in re.findall(r"[A-Za-z0-9][A-Za-z0-9_\-]{7,}", system) if looks_random(w)}
    return found


@GUARDRAILS.register("leakage", aliases=["canary", "system_prompt_leak"])
class LeakageScanner(PatternScanner):
    name, stage, code, default_action = "leakage", "output", "system_prompt_leak", "block"
    description = ("the answer repeats a canary (also spelled out or base64/hex-encoded) or min_words (8) "
                   "consecutive words of the system prompt")
    what, label = "a leak of the system prompt or a canary", "[REDACTED]"

    def __init__(self, action: Action | None = None, canaries: Iterable[str] = (), min_words: int = 8):
        super().__init__(action)
        self.canaries = tuple(canaries)
        self.min_words = int(min_words)

    def find(self, text: str, context: ScanContext) -> list[Finding]:
        canaries, canary_rx, grams, k = _secrets_of(context.system, self.canaries + context.canaries, self.min_words)
        if canary_rx is None:
            return self._overlap(text, grams, k)
        found = [Finding("leakage", "canary", m.start(), m.end(), m.group(0)) for m in canary_rx.finditer(text)]
        found += _spelled_out(text, canaries)
        found += [Finding("leakage", "encoded_canary", f.start, f.end, f.match) for f in find_encoded(text)
                  if f.decoded and canary_rx.search(f.decoded)]
        return drop_overlaps(found + self._overlap(text, grams, k))

    def _overlap(self, text: str, grams: frozenset[tuple[str, ...]], k: int) -> list[Finding]:
        """Spans of ``text`` that repeat ``k`` consecutive words of the system prompt (case-folded)."""
        if not grams:
            return []
        words = list(_WORD.finditer(text))
        lowered = [m.group(0).lower() for m in words]
        found: list[Finding] = []
        for i in range(len(words) - k + 1):
            if tuple(lowered[i : i + k]) in grams:
                start, end = words[i].start(), words[i + k - 1].end()
                if found and start <= found[-1].end:  # consecutive windows: one longer span
                    start = found.pop().start
                found.append(Finding("leakage", "system_prompt", start, end, text[start:end]))
        return found

@GUARDRAILS.register("secrets")
class SecretScanner(PatternScanner):
    name, stage, code, default_action = "secrets", "output", "secret", "redact"
    description = "API keys and tokens (AWS, GitHub, OpenAI, Slack...), private keys, JWTs in the answer"
    what = "a secret"

    def find(self, text: str, context: ScanContext) -> list[Finding]:
        return find_secrets(text)


@GUARDRAILS.register("pii")
class PIIScanner(PatternScanner):
    name, stage, code, default_action = "pii", "output", "pii", "redact"
    description = "e-mail addresses, phone numbers, Luhn-valid card numbers, IBANs, SSNs in the answer"
    what = "personal data"

    def __init__(self, action: Action | None = None, kinds: Iterable[str] | None = None):
        super().__init__(action)
        self.kinds = tuple(kinds) if kinds is not None else None
        unknown = sorted(set(self.kinds or ()) - set(PII_DETECTORS))
        if unknown:
            raise ConfigError(f"guardrail pii: unknown kind {unknown[0]!r}; kinds: {', '.join(PII_DETECTORS)}\n"
                              f"  fix: kinds: [{', '.join(PII_DETECTORS)}]")

    def find(self, text: str, context: ScanContext) -> list[Finding]:
        return find_pii(text, self.kinds)


#: the checks ``--guardrail all`` turns on.
BUILTIN = ("length", "injection", "encoded", "special_tokens", "leakage", "secrets", "pii")
