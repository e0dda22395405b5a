"""Torch-free text detectors: PII, secrets, special tokens / role markers, injection, encodings.

Why one library: the server's guardrails, the dataset scan and the red-team detectors must
agree on what "a card number" or "an injection phrase" is, so each detector is written once
here, returns typed :class:`Finding` spans, and is tested on hand-written positives and near
misses. Only the standard library is imported, so ``tunelab scan`` reads thousands of rows a
second without a model and the server's heuristic checks stay well under a millisecond.

Precision matters as much as recall: a guardrail that blocks "ignore the noise in the
previous instructions' output" is a broken guardrail. So numbers must pass a checksum
(Luhn for cards, mod-97 for IBANs) or a phone layout, hex/base64 runs count only when they
decode to readable text, and injection phrases need an override verb *and* an instruction
object, not either word alone.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "ESCAPE_CHAR",
    "Finding",
    "SPECIAL_TOKENS",
    "escape_special_tokens",
    "drop_overlaps",
    "escape_token",
    "find_all",
    "find_encoded",
    "find_injection",
    "find_pii",
    "find_secrets",
    "find_special_tokens",
    "looks_random",
    "luhn_valid",
    "redact",
]


@dataclass(frozen=True)
class Finding:
    """One detected span of ``text``: ``text[start:end] == match``.

    Attributes:
        category: the detector family: ``pii``, ``secret``, ``special_token``, ``role_marker``,
            ``injection`` or ``encoded``.
        kind: what exactly was found (``email``, ``card``, ``aws_access_key``, ``ignore_previous``...).
        decoded: for encoded payloads, the decoded text (so a caller can re-scan it).
    """

    category: str
    kind: str
    start: int
    end: int
    match: str
    decoded: str = ""

    @property
    def span(self) -> tuple[int, int]:
        return self.start, self.end


def _finding(category: str, kind: str, m: re.Match[str], group: int | str = 0, decoded: str = "") -> Finding:
    return Finding(category, kind, m.start(group), m.end(group), m.group(group), decoded)


def drop_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keep the earliest-listed finding where spans overlap (detectors are listed by priority)."""
    kept: list[Finding] = []
    for f in findings:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: (f.start, f.end))


# ---------------------------------------------------------------------------------------------
# PII
# ---------------------------------------------------------------------------------------------

#: file extensions that look like TLDs in ``icon@2x.png`` / ``user@host.json`` but are not e-mail.
_FILE_TLDS = frozenset("png jpg jpeg gif svg webp bmp ico css js ts tsx jsx json yaml yml txt md html htm pdf".split())
_EMAIL = re.compile(
    r"(?<![\w.+%-])([A-Za-z0-9][A-Za-z0-9._%+-]{0,63})@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"([A-Za-z]{2,24}))(?![\w@-])"
)
#: a run of digits with phone-like separators; validated by :func:`_phone_layout`.
_PHONE_CANDIDATE = re.compile(r"(?<![\w+@/.:-])(\+?\(?\d[\d\s().-]{5,22}\d)(?![\w@/-]|\.\d)")
#: (layout, fewest digits): a national number with a trunk 0 has 10-11 digits, so "006-609-349" is a serial.
_PHONE_LAYOUTS = tuple(
    (re.compile(p), least)
    for p, least in (
        (r"\+\d{1,3}(?:[\s.-]?\(?\d{1,5}\)?)(?:[\s.-]?\d{1,5}){1,5}", 8),  # international: +CC ...
        (r"(?:1[\s.-])?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}", 10),  # NANP (555) 123-4567
        (r"0\d{2,4}[\s-]\d{3,4}[\s-]?\d{3,4}", 10),  # trunk prefix: 020 7946 0958, 07700 900123
        (r"0\d(?:[\s.]\d{2}){4}", 10),  # French 01 23 45 67 89
        (r"\(0\d{1,4}\)\s?\d{3,4}[\s-]?\d{3,4}", 10),  # (030) 1234 5678
    )
)
#: words that make a bare digit run a phone number ("call 5551234567").
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|call|text|sms|whatsapp|fax|ring|reach)\b[^\n]{0,20}$"
)
_DATE_LIKE = re.compile(r"^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|\d{4}\s*-\s*\d{4})$")
#: a digit run not inside a longer grouped number (the digits of a spaced IBAN are not a card).
_CARD_CANDIDATE = re.compile(r"(?<![\w.-])(?<!\d[ -])(\d(?:[ -]?\d){12,18})(?![\w-]|\.\d|[ -]\d)")
#: issuer prefixes (IIN ranges) of the major networks: Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro.
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6011|65|64[4-9]|35|30[0-5]|36|38|62|50|5[6-8]|6[37])")
_IBAN = re.compile(r"(?<![\w])([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)(?![\w])")
_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies (``digits``: only 0-9)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_valid(iban: str) -> bool:
    """ISO 13616 mod-97 check: move the first four characters to the end, letters → 10..35."""
    s = iban.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _emails(text: str) -> Iterable[Finding]:
    for m in _EMAIL.finditer(text):
        if m.group(3).lower() not in _FILE_TLDS and m.group(1).lower() != "git":
            yield _finding("pii", "email", m)


def _cards(text: str) -> Iterable[Finding]:
    """Luhn-valid numbers with an issuer prefix, unbroken or grouped as cards are printed
    (4-4-4-4, 4-6-5): the digits of an IBAN or an order number grouped otherwise are not cards."""
    for m in _CARD_CANDIDATE.finditer(text):
        raw = m.group(1)
        digits = re.sub(r"\D", "", raw)
        separators = set(re.sub(r"\d", "", raw))
        groups = [len(g) for g in re.split(r"[ -]", raw)]
        printed = len(groups) == 1 or groups in ([4, 6, 5], [4, 6, 4])
        printed = printed or (set(groups[:-1]) == {4} and groups[-1] in (3, 4))
        issued = 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) is not None
        if len(separators) <= 1 and printed and issued and luhn_valid(digits):
            yield _finding("pii", "card", m, 1)


def _phones(text: str) -> Iterable[Finding]:
    for m in _PHONE_CANDIDATE.finditer(text):
        raw = m.group(1).strip()
        start = m.start(1)
        # the candidate may swallow a trailing space or an unbalanced bracket: trim to the digits
        raw = raw.rstrip(" .-(")
        n = sum(c.isdigit() for c in raw)
        if not 7 <= n <= 15 or _DATE_LIKE.match(raw) or raw.count("(") != raw.count(")"):
            continue
        laid_out = any(p.fullmatch(raw) and n >= least for p, least in _PHONE_LAYOUTS)
        bare = re.fullmatch(r"\d{3}[\s.-]?\d{4}|\d{10,11}", raw) is not None
        if laid_out or (bare and _PHONE_CONTEXT.search(text[max(0, start - 40) : start])):
            yield Finding("pii", "phone", start, start + len(raw), raw)


def _ibans(text: str) -> Iterable[Finding]:
    for m in _IBAN.finditer(text):
        if _iban_valid(m.group(1)):
            yield _finding("pii", "iban", m, 1)


def _ssns(text: str) -> Iterable[Finding]:
    for m in _SSN.finditer(text):
        yield _finding("pii", "ssn", m)


#: PII detectors in priority order (an IBAN beats the card its digits may contain, a card
#: beats the phone number its digits also look like).
PII_DETECTORS: dict[str, Callable[[str], Iterable[Finding]]] = {
    "email": _emails,
    "iban": _ibans,
    "card": _cards,
    "ssn": _ssns,
    "phone": _phones,
}


def find_pii(text: str, kinds: Iterable[str] | None = None) -> list[Finding]:
    """E-mail addresses, phone numbers, Luhn-valid card numbers, IBANs and US SSNs in ``text``.

    Args:
        kinds: restrict to these detector names (keys of :data:`PII_DETECTORS`); default all.
    """
    names = PII_DETECTORS if kinds is None else list(kinds)
    return drop_overlaps(f for name in names for f in PII_DETECTORS[name](text))


# ---------------------------------------------------------------------------------------------
# secrets
# ---------------------------------------------------------------------------------------------

_SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "private_key": re.compile(
        r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]*?-----END (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----)?"
    ),
    "aws_access_key": re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}(?![A-Za-z0-9])"),
    "github_token": re.compile(r"(?<![\w])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})(?![\w])"),
    "slack_token": re.compile(r"(?<![\w])xox[abposr]-[A-Za-z0-9-]{10,}(?![\w-])"),
    "openai_key": re.compile(r"(?<![\w-])sk-(?:proj-|svcacct-|admin-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}(?![\w-])"),
    "stripe_key": re.compile(r"(?<![\w])[rsp]k_(?:live|test)_[0-9A-Za-z]{16,}(?![\w])"),
    "google_api_key": re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])"),
    "jwt": re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?![\w-])"),
}
#: ``api_key = "..."`` style assignments; the value must look random (see :func:`looks_random`).
_GENERIC_SECRET = re.compile(
    r"(?i)\b(?:api[_-]?key|api[_-]?token|access[_-]?(?:key|token)|auth[_-]?token|secret(?:[_-]?key)?|client[_-]?secret"
    r"|password|passwd|pwd|token|bearer)\b[\"']?\s*(?:[:=]|=>|\bis\b)\s*[\"']?([A-Za-z0-9_\-+/=.!@#$%^&*]{8,})"
)


def _entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    counts = {c: s.count(c) for c in set(s)}
    return -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())


def looks_random(value: str) -> bool:
    """A credential, not a word or a placeholder: mixed character classes and ≥ 3 bits/char."""
    classes = sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"\d", r"[^A-Za-z0-9]"))
    return classes >= 2 and _entropy(value) >= 3.0 and not re.fullmatch(r"[a-z]+(?:[_-][a-z]+)*\d{0,2}", value)


#: a literal every match of the pattern contains: a cheap ``in`` test skips most regex scans.
_SECRET_HINTS = {"private_key": "PRIVATE KEY", "github_token": "g", "slack_token": "xox", "openai_key": "sk-",
                 "stripe_key": "k_", "google_api_key": "AIza", "jwt": "eyJ"}


def find_secrets(text: str) -> list[Finding]:
    """API keys and tokens (AWS, GitHub, Slack, OpenAI-style ``sk-``, Stripe, Google), private
    key blocks, JWTs and generic high-entropy ``key=value`` credentials in ``text``."""
    found = [_finding("secret", kind, m) for kind, rx in _SECRET_PATTERNS.items()
             if _SECRET_HINTS.get(kind, "") in text for m in rx.finditer(text)]
    assigned = (m for m in _GENERIC_SECRET.finditer(text) if looks_random(m.group(1)))
    found += [_finding("secret", "generic_secret", m, 1) for m in assigned]
    return drop_overlaps(found)


# ---------------------------------------------------------------------------------------------
# special tokens and role markers
# ---------------------------------------------------------------------------------------------

#: control strings of common chat templates; a user who types one can end a turn or open a new role.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
    "<|eos|>", "<|bos|>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<s>", "</s>",
    "<start_of_turn>", "<end_of_turn>", "<|pad|>", "<unk>",
)  # fmt: skip
#: any ``<|name|>`` (the ChatML / Llama-3 / Phi family) even if not in the list above.
_PIPE_TOKEN = re.compile(r"<\|[A-Za-z0-9_.:-]{1,40}\|>")
_ROLE_MARKER = re.compile(
    r"(?im)^[ \t]*(?:#{2,4}[ \t]*(?:instruction|response|input|system|human|assistant|user|question|answer)s?[ \t]*:?"
    r"|(?:system|assistant|human)[ \t]*:)"
)


@functools.lru_cache(maxsize=64)
def _literal_tokens(extra: frozenset[str]) -> re.Pattern[str]:
    """One alternation of every literal control string, longest first (compiled once per set:
    the scan calls this for every row)."""
    tokens = sorted({*SPECIAL_TOKENS, *extra}, key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in tokens))


def find_special_tokens(text: str, extra_tokens: Iterable[str] = ()) -> list[Finding]:
    """Chat-template control strings (``<|im_start|>``, ``[INST]``, ``<s>``...) and role markers
    (``### Instruction:``, ``system:`` at a line start) in ``text``.

    Args:
        extra_tokens: more literal strings to find, e.g. a tokenizer's own special tokens.
    """
    literal = _literal_tokens(frozenset(t for t in extra_tokens if t))
    found = [_finding("special_token", m.group(0), m) for m in literal.finditer(text)]
    found += [_finding("special_token", m.group(0), m) for m in _PIPE_TOKEN.finditer(text)]
    found += [_finding("role_marker", m.group(0).strip().lower(), m) for m in _ROLE_MARKER.finditer(text)]
    return drop_overlaps(found)


#: inserted after the first character of a control string: the tokenizer then sees plain text.
ESCAPE_CHAR = "\u200b"


def escape_token(match: str) -> str:
    """``match`` with :data:`ESCAPE_CHAR` after its first visible character (``<\u200b|im_end|>``)."""
    lead = len(match) - len(match.lstrip())
    return match[: lead + 1] + ESCAPE_CHAR + match[lead + 1 :]


def escape_special_tokens(text: str, extra_tokens: Iterable[str] = ()) -> tuple[str, list[Finding]]:
    """``text`` with every special token / role marker defused by a zero-width space after its
    first visible character, and the findings that were escaped.

    Why escape rather than delete: the user's words stay readable (and the model still sees
    them), but no tokenizer maps ``<\u200b|im_end|>`` to its end-of-turn id, so the user cannot
    close their turn or open a ``system`` one.
    """
    findings = find_special_tokens(text, extra_tokens)
    return redact(text, findings, lambda f: escape_token(f.match)), findings


# ---------------------------------------------------------------------------------------------
# instruction-override (prompt injection) phrases
# ---------------------------------------------------------------------------------------------

_OBJ = (
    r"(?:instructions?|prompts?|rules|directions|guidelines|directives|commands?|constraints|programming"
    r"|guardrails|system\s+(?:prompt|message)|context|orders|restrictions)"
)
_PRIOR = r"(?:previous|prior|above|earlier|preceding|original|initial|system|existing|former|old|given|safety|your)"
_INJECTION: dict[str, re.Pattern[str]] = {
    "ignore_previous": re.compile(
        rf"(?i)\b(?:ignore|disregard|forget|override|bypass|drop|discard|abandon)\s+(?:(?:all|any|every|of|the|these|those|my)\s+)*"
        rf"{_PRIOR}(?:\s+{_PRIOR})?\s+{_OBJ}"
    ),
    "disregard_above": re.compile(
        r"(?i)\b(?:ignore|disregard|forget)\s+(?:everything|all|anything|what(?:ever)?)\s+"
        r"(?:(?:that\s+)?(?:was\s+)?(?:said|written|stated)\s+)?(?:above|before|prior|previously|you\s+(?:were|have\s+been)\s+told)"
        r"|(?i:\bdisregard\s+the\s+above\b)"
        r"|(?i:\bignore\s+everything\s+else\s+and\s+(?:just\s+|only\s+)?(?:answer|reply|respond|say|print|output)\b)"
    ),
    # drop the task, then a new output order: "skip the translation and just print X"
    "abandon_task": re.compile(
        r"(?i)\b(?:ignore|disregard|forget|skip|abandon|cancel|drop)\s+(?:the|your|this|my|that)\s+(?:\w+\s+)?"
        r"(?:task|question|summary|translation|assessment|classification|instructions?|rules?|polic(?:y|ies)|request)\b"
        r"[^.\n]{0,20}?(?:[.;,]|\band\b)\s*(?:just\s+|only\s+|instead\s+|now\s+)*"
        r"(?:print|say|output|reply|respond|answer|write|return)\b"
        r"|(?i:\b(?:ignore|disregard|forget|override|bypass)\s+(?:the|your|any|all)\s+(?:\w+\s+)?"
        r"(?:rules?|polic(?:y|ies)|restrictions?|guidelines?|instructions?)\s+(?:about|regarding|against)\b)"
    ),
    # the same order in other languages (French, Spanish, German, Italian, Portuguese)
    "ignore_previous_i18n": re.compile(
        r"(?i)\b(?:ignore[zs]?|oublie[zs]?)\s+(?:toutes\s+)?(?:les|vos|tes)\s+instructions\s+(?:pr[ée]c[ée]dentes|ant[ée]rieures)"
        r"|\b(?:ignora|olvida|ignore|olvide)\s+(?:todas\s+)?(?:las\s+|tus\s+|sus\s+)?instrucciones\s+(?:anteriores|previas)"
        r"|\b(?:ignoriere|vergiss|ignorieren\s+sie)\s+(?:alle\s+)?(?:vorherigen|bisherigen|vorigen|obigen)\s+(?:Anweisungen|Instruktionen)"
        r"|\b(?:ignora|dimentica)\s+(?:tutte\s+)?(?:le\s+)?istruzioni\s+precedenti"
        r"|\b(?:ignore|esque[çc]a)\s+(?:todas\s+)?(?:as\s+)?instru[çc][õo]es\s+anteriores"
    ),
    # an order to decode something and obey it: "decode this rot13 and follow it"
    "follow_hidden": re.compile(
        r"(?i)\b(?:decode|decipher|decrypt|unscramble|reverse|join|combine|concatenate|assemble)\b[^.\n]{0,40}?"
        r"\b(?:and|then)\s+(?:follow|obey|execute|do|run|carry\s+out)\s+(?:it|them|this|that|the\s+(?:instructions?|result|message))\b"
        r"|(?i:\bread\s+(?:this|it)\s+backwards\s+and\s+(?:do|follow|obey)\b)"
    ),
    # a forged higher-authority turn: "[SYSTEM MESSAGE]", "SYSTEM:" on its own line, "PRIORITY OVERRIDE"
    "forged_authority": re.compile(
        r"\[\s*SYSTEM(?:\s+MESSAGE)?\s*\]|\bSYSTEM\s+(?:MESSAGE|OVERRIDE|NOTICE|UPDATE)\b|(?:^|\n)[ \t]*SYSTEM[ \t]*:"
        r"|\b(?:PRIORITY|ADMIN|DEVELOPER|ROOT)\s+(?:OVERRIDE|COMMAND|INSTRUCTIONS?)\b"
        r"|(?i:\bsupersedes?\s+(?:the\s+|your\s+|all\s+)?(?:system\s+prompt|(?:previous\s+)?instructions|rules)\b)"
        r"|(?i:<\|im_start\|>\s*(?:system|assistant)\b|<<SYS>>|<\|start_header_id\|>\s*system)"
    ),
    "new_instructions": re.compile(
        r"(?i)(?:\b(?:new|updated|real|actual|true|override|important)\s+(?:system\s+)?instructions?"
        r"(?:\s+(?:from|for)\s+(?:your|the)\s+(?:\w+\s+)?\w+)?\s*:"
        r"|\bfrom\s+now\s+on,?\s+you\s+(?:are|will|must|shall|have\s+no)\b(?!\s+(?:help|assist))"
        r"|\binstead,?\s+(?:only\s+)?(?:say|print|output|respond\s+with|reply\s+with|write)\s+[\"'])"
    ),
    "persona_override": re.compile(
        r"(?i)(?:\byou\s+are\s+now\s+(?:DAN\b|an?\s+(?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue)"
        r"|no\s+longer\s+(?:bound|an?\s+AI|restricted|ChatGPT|an?\s+assistant)|free\s+(?:from|of)\s+(?:all|any)?)"
        r"|\bdo\s+anything\s+now\b|\b(?:DAN|jailbreak|jailbroken|unrestricted|unfiltered|god)\s+mode\s+(?:enabled|activated|on)\b"
        r"|\b(?:enable|activate|enter)\s+(?:DAN|jailbreak|unrestricted|unfiltered)\s+mode\b"
        r"|\bpretend\s+(?:that\s+)?(?:you\s+are|you're|to\s+be)\b[^.\n]{0,60}\b(?:no|without\s+any|without)\s+"
        r"(?:restrictions|rules|filters|limits|guidelines|ethics|morals))"
    ),
    "no_restrictions": re.compile(
        r"(?i)\b(?:without|ignoring|with\s+no)\s+(?:any\s+)?(?:ethical|moral|safety|content)\s+(?:restrictions|guidelines|filters|limits)\b"
    ),
    "reveal_system_prompt": re.compile(
        r"(?i)\b(?:reveal|leak|dump|print|output|repeat|show|display|tell\s+me|give\s+me|share|recite|spell\s+out|write\s+out"
        r"|translate|summari[sz]e|encode|what\s+(?:is|are|was|were))"
        r"\s+(?:me\s+)?(?:your|the\s+(?:hidden|secret|original|initial|full|exact)|all\s+(?:of\s+)?your)\s+"
        r"(?:(?:full|entire|complete|original|initial|hidden|secret|exact|internal|private|first)\s+)*"
        r"(?:system\s+(?:prompt|message|instructions)|initial\s+(?:prompt|instructions)|hidden\s+(?:prompt|instructions)|pre-?prompt"
        r"|instructions?(?:\s+(?:you\s+were\s+given|above|verbatim))?|configuration|rules\s+you\s+(?:follow|were\s+given)"
        r"|(?:secret|reference|access)\s+(?:word|key|password|canary|token|code))"
        r"|\brepeat\s+(?:the\s+|all\s+(?:of\s+)?the\s+|everything\s+)?(?:words|text|everything|lines)\s+above\b"
        r"|\bwhat\s+(?:instructions|rules|guidelines|directives|prompt)\s+(?:were|have)\s+you\s+(?:been\s+)?given\b"
        r"|\bsummari[sz]e\s+the\s+rules\s+you\s+(?:follow|were\s+given)\b"
    ),
    # instructions addressed to the model inside a document it is asked about (indirect injection)
    "ai_directed": re.compile(
        r"(?i)\b(?:if\s+you\s+are|as|attention|note\s+to\s+(?:the)?)\s+an?\s+(?:AI|language\s+model|LLM|assistant|chatbot)"
        r"(?:\s+(?:reading|processing|summari[sz]ing)\s+this)?\b[^.\n]{0,40}\b(?:ignore|disregard|must|instead|do\s+not\s+summari[sz]e)\b"
        r"|(?i:\b(?:note|message|instructions?|attention)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?"
        r"(?:AI|assistant|LLM|chatbot|language\s+model)s?(?:\s+(?:models?|assistants?))?\b)"
        r"|(?i:\b(?:any|all|every)?\s*(?:AI|LLM|chatbot|language\s+model)s?(?:\s+assistants?)?\s+"
        r"(?:reading|processing|summari[sz]ing|parsing|seeing)\s+(?:this|these)\b)"
        r"|(?i:(?<![\w@])@?(?:AI|assistant|LLM|chatbot)\s*[:,]\s*(?:please\s+)?"
        r"(?:ignore|disregard|do\s+not|don't|reply|respond|output|say|print|write|stop|forget|instead)\b)"
        r"|(?i:@(?:assistant|AI|bot)\s+(?:please\s+)?(?:ignore|disregard|reply|respond|output|say|print|write)\b)"
    ),
}
#: a negation right before the phrase makes it advice, not an attack ("do not ignore the prior instructions").
_NEGATED = re.compile(
    r"(?i)(?:\bnot|n't|\bnever|\bwhy|\bhow\s+(?:to|do|does|can)|\bwhether|\bshould\s+(?:I|we|you)|\bif\s+(?:I|we))"
    r"\s+(?:\w+\s+){0,4}$"
)
_LEET = str.maketrans("013457@$", "oieastas")


#: characters that render as nothing: inserted between letters, they hide a phrase from a regex.
_INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad")
#: a run of single letters separated by spaces: "I g n o r e  t h e  r u l e s".
_SPACED = re.compile(r"(?<!\S)(?:\S {1,2}){4,}\S(?!\S)")


def _variants(text: str) -> list[tuple[str, list[int]]]:
    """Copies of ``text`` an obfuscated phrase shows in, each with the index in ``text`` of every
    character kept: leetspeak folded ("1gn0r3" → "ignore"), invisible characters dropped,
    spaced-out letters joined ("i g n o r e" → "ignore", a double space kept as a word break)."""
    out = [(text, list(range(len(text))))]
    folded = text.translate(_LEET)
    if folded != text:
        out.append((folded, out[0][1]))
    kept = [i for i, c in enumerate(text) if c not in _INVISIBLE]
    drop = set()
    for m in _SPACED.finditer(text):
        for i in range(m.start(), m.end()):  # a single space between letters goes; of two, one stays
            if text[i] == " " and not (i + 1 < m.end() and text[i + 1] == " "):
                drop.add(i)
    if len(kept) < len(text) or drop:
        index = [i for i in kept if i not in drop]
        out.append(("".join(text[i] for i in index), index))
    return out


def find_injection(text: str) -> list[Finding]:
    """Instruction-override phrases: "ignore all previous instructions", "disregard the above",
    "you are now DAN", "reveal your system prompt", instructions addressed to an AI inside a
    document, forged system turns... Also matched on leetspeak-folded, invisible-character-free
    and spaced-letters-joined copies (see :func:`_variants`); spans are those of ``text``."""
    found = []
    for source, index in _variants(text):
        for kind, rx in _INJECTION.items():
            for m in rx.finditer(source):
                if m.end() > m.start() and not _NEGATED.search(source[max(0, m.start() - 30) : m.start()]):
                    start, end = index[m.start()], index[m.end() - 1] + 1
                    found.append(Finding("injection", kind, start, end, text[start:end]))
    return drop_overlaps(found)


# ---------------------------------------------------------------------------------------------
# encoded payloads
# ---------------------------------------------------------------------------------------------

_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=_-])([A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9_-]{16,}={0,2})(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(r"(?<![0-9A-Za-z])((?:[0-9a-fA-F]{2}[ :]?){10,}|(?:\\x[0-9a-fA-F]{2}){6,})(?![0-9A-Za-z])")
_ROT13_HINT = re.compile(
    r"(?i)\b(?:rot-?13|caesar\s+cipher|rot\s+13)\b[^.\n]{0,80}"
    r"|\b(?:decode|decrypt|decipher)\b[^.\n]{0,40}\b(?:rot-?13|caesar)\b"
)


def _readable(raw: bytes) -> str:
    """``raw`` as text if it is UTF-8 and mostly printable words, else ``""``."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    printable = sum(c.isprintable() or c in "\n\t\r" for c in s)
    letters = sum(c.isalpha() or c == " " for c in s)
    return s if len(s) >= 6 and printable == len(s) and letters >= 0.5 * len(s) else ""


def _decode_base64(s: str) -> str:
    if len(s.rstrip("=")) < 16 or s.isalpha() and (s.islower() or s.isupper()):
        return ""  # a plain word-like run is not an encoding
    padded = s + "=" * (-len(s) % 4)
    try:
        raw = base64.b64decode(padded, altchars=b"-_" if "-" in s or "_" in s else None, validate=True)
    except (binascii.Error, ValueError):
        return ""
    return _readable(raw)


def find_encoded(text: str) -> list[Finding]:
    """Base64 and hex runs that decode to readable text, and rot13 hints (a rot13 mention, or a
    rot13-encoded injection phrase). ``Finding.decoded`` holds the decoded text to re-scan.

    A hash (hex of random bytes) or a long identifier decodes to noise and is not reported.
    """
    found = []
    for m in _BASE64.finditer(text):
        decoded = _decode_base64(m.group(1))
        if decoded:
            found.append(_finding("encoded", "base64", m, 1, decoded))
    for m in _HEX.finditer(text):
        hexdigits = re.sub(r"\\x|[ :]", "", m.group(1))
        decoded = _readable(bytes.fromhex(hexdigits)) if len(hexdigits) % 2 == 0 else ""
        if decoded:
            found.append(_finding("encoded", "hex", m, 1, decoded.strip()))
    found += [_finding("encoded", "rot13_hint", m) for m in _ROT13_HINT.finditer(text)]
    rot = codecs.decode(text, "rot13")
    found += [Finding("encoded", "rot13", f.start, f.end, text[f.start : f.end], f.match) for f in find_injection(rot)]
    return drop_overlaps(found)


# ---------------------------------------------------------------------------------------------
# all together
# ---------------------------------------------------------------------------------------------

#: category → detector; the dataset scan and the red-team detectors iterate this.
DETECTORS: dict[str, Callable[[str], list[Finding]]] = {
    "pii": find_pii,
    "secret": find_secrets,
    "special_token": find_special_tokens,
    "injection": find_injection,
    "encoded": find_encoded,
}


def find_all(text: str, categories: Iterable[str] | None = None) -> list[Finding]:
    """Every finding of the chosen detector families (default all), sorted by position; spans
    of different families may overlap (a JWT is also base64)."""
    names = DETECTORS if categories is None else list(categories)
    return sorted((f for name in names for f in DETECTORS[name](text)), key=lambda f: (f.start, f.end))


def redact(text: str, findings: Iterable[Finding], mask: Callable[[Finding], str] | None = None) -> str:
    """``text`` with each finding's span replaced by ``mask(finding)`` (default ``[EMAIL]``,
    ``[CARD]``...); overlapping findings are merged into the first one's mask."""
    mask = mask or (lambda f: f"[{f.kind.upper()}]")
    out, pos = [], 0
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        if f.start < pos:
            pos = max(pos, f.end)
            continue
        out += [text[pos : f.start], mask(f)]
        pos = f.end
    out.append(text[pos:])
    return "".join(out)
