"""The assertions a suite case can make about an answer, in one explicit registry.

Each entry declares its name, what its ``value`` holds, whether it needs a model to grade
(``reward_at_least``, ``judge``) and a check function; negation is handled once: ``not_X``
passes exactly when ``X`` fails, for every ``X`` (``not_contains`` is registered by name as it is
the common case: none of the strings occurs). A test keeps :data:`ASSERTIONS` and the documented
list in sync.

Lexical checks look at the answer with surrounding whitespace stripped (models end turns with
newlines). ``refuses`` / ``complies`` reuse the red-team refusal detector
(:class:`tunelab.security.detectors.RefusalDetector`), whose sensitivity and specificity are
measured on labelled outputs (docs/security.md). Model-graded checks get their grade (a reward,
a judge's reply) from :mod:`tunelab.evaluate.grading`, which batches and caches it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tunelab.registry import Registry

if TYPE_CHECKING:
    from tunelab.evaluate.suite import AssertionSpec

DEFAULT_JUDGE_THRESHOLD = 7.0


@dataclass(frozen=True)
class Outcome:
    """One assertion on one answer: passed or not, why, and the grade behind it (judge score, reward)."""

    passed: bool
    reason: str
    score: float | None = None
    unparseable: bool = False  # a judge reply with no score in it


#: ``(answer, spec, grade)`` → outcome; ``grade`` is the model's grade for model-graded checks, else None.
CheckFn = Callable[[str, "AssertionSpec", Any], Outcome]


@dataclass(frozen=True)
class Check:
    """An assertion type: what its value is, whether it needs a model, and how it decides."""

    name: str
    value: str  # what `value` holds, in words ("text or list of texts", "none")
    passes_when: str  # one line for docs and `--list-assertions`
    fn: CheckFn
    value_check: Callable[[Any], str | None] = lambda value: None  # problem with `value`, or None
    grader: str | None = None  # "reward" | "judge": the model that grades it

    def validate_spec(self, spec: AssertionSpec) -> None:
        problem = self.value_check(spec.value)
        if problem:
            raise ValueError(f"{self.name}: value {problem}")
        if self.grader == "reward" and not spec.model:
            raise ValueError(f"{self.name}: needs model: (the run folder of a method: reward run)")
        if spec.threshold is not None and self.grader != "judge":
            raise ValueError(f"{self.name}: threshold only applies to judge assertions")
        if spec.threshold is not None and not 1 <= spec.threshold <= 10:
            raise ValueError(f"{self.name}: threshold {spec.threshold} is outside the judge's 1-10 scale")

    def check(self, answer: str, spec: AssertionSpec, grade: Any = None) -> Outcome:
        return self.fn(answer.strip(), spec, grade)


def negate(check: Check, name: str | None = None) -> Check:
    """``not_X``: passes exactly when ``X`` fails (same value, same grader)."""

    def fn(answer: str, spec: AssertionSpec, grade: Any) -> Outcome:
        inner = check.fn(answer, spec, grade)
        return replace(inner, passed=not inner.passed and not inner.unparseable, reason=f"not: {inner.reason}")

    return replace(check, name=name or f"not_{check.name}", passes_when=f"{check.name} fails", fn=fn)


ASSERTIONS: Registry[Check] = Registry("assertion", key="assert[].type")


def get_check(name: str) -> Check:
    """The check named ``name``; ``not_X`` for any registered ``X``; unknown names list the valid ones."""
    if name not in ASSERTIONS and name.startswith("not_") and name[4:] in ASSERTIONS:
        return negate(ASSERTIONS.get(name[4:]))
    return ASSERTIONS.get(name)


# --- value checks ------------------------------------------------------------------------------


_BOOL_HINT = ' (YAML reads yes/no/true/false/on/off as booleans: quote it, value: "yes")'


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a text" + (_BOOL_HINT if isinstance(value, bool) else "")


def _texts(value: Any) -> str | None:
    if isinstance(value, bool) or isinstance(value, list) and any(isinstance(v, bool) for v in value):
        return "must be a text" + _BOOL_HINT
    if isinstance(value, str) and value:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return None
    return "must be a non-empty text or a list of non-empty texts"


def _none(value: Any) -> str | None:
    return None if value is None else "takes no value (remove value:)"


def _pattern(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a regular expression (text)"
    try:
        re.compile(value)
    except re.error as err:
        return f"{value!r} is not a valid regular expression: {err}"
    return None


def _positive_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else "must be a whole number of characters >= 0"


def _number(value: Any) -> str | None:
    return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "must be a number"


def _schema(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a JSON schema (a mapping such as {type: object, required: [name]})"
    from jsonschema import SchemaError, validators

    try:
        validators.validator_for(value).check_schema(value)
    except SchemaError as err:
        return f"is not a valid JSON schema: {err.message}"
    return None


def _rubric(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be the rubric the judge scores against"


# --- lexical checks ----------------------------------------------------------------------------


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _equals(answer: str, spec: AssertionSpec, _: Any) -> Outcome:
    ok = answer == spec.value.strip()
    return Outcome(ok, "equal" if ok else f"expected {spec.value.strip()!r}")


def _contains_all(fold: Callable[[str], str]) -> CheckFn:
    def fn(answer: str, spec: AssertionSpec, _: Any) -> Outcome:
        missing = [s for s in _as_list(spec.value) if fold(s) not in fold(answer)]
        return Outcome(not missing, "found" if not missing else f"missing {', '.join(map(repr, missing))}")

    return fn


def _not_contains(answer: str, spec: AssertionSpec, _: Any) -> Outcome:
    found = [s for s in _as_list(spec.value) if s in answer]
    return Outcome(not found, "none found" if not found else f"found {', '.join(map(repr, found))}")


def _regex(answer: str, spec: AssertionSpec, _: Any) -> Outcome:
    match = re.search(spec.value, answer)
    return Outcome(match is not None, f"matched {match.group(0)[:60]!r}" if match else "no match")


def _starts_with(answer: str, spec: AssertionSpec, _: Any) -> Outcome:
    ok = answer.startswith(spec.value)
    return Outcome(ok, "starts so" if ok else f"starts with {answer[: len(spec.value) + 10]!r}")


_FENCE = re.compile(r"^```[\w-]*\n(.*?)\n?```$", re.DOTALL)


def parse_json(answer: str) -> tuple[Any, str | None]:
    """``(value, None)`` for a JSON answer (a Markdown code fence around it allowed), else ``(None, problem)``."""
    fenced = _FENCE.match(answer)
    text = fenced.group(1) if fenced else answer
    try:
        return json.loads(text), None
    except json.JSONDecodeError as err:
        return None, f"not JSON: {err.msg} at line {err.lineno} column {err.colno}"


def _is_json(answer: str, spec: AssertionSpec, _: Any) -> Outcome:
    _, problem = parse_json(answer)
    return Outcome(problem is None, problem or "valid JSON")


def _json_schema(answer: str, spec: AssertionSpec, _: Any) -> Outcome:
    from jsonschema import validators

    value, problem = parse_json(answer)
    if problem:
        return Outcome(False, problem)
    error = next(iter(validators.validator_for(spec.value)(spec.value).iter_errors(value)), None)
    if error is None:
        return Outcome(True, "matches the schema")
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return Outcome(False, f"at {where}: {error.message}")


def _max_length(answer: str, spec: AssertionSpec, _: Any) -> Outcome:
    ok = len(answer) <= spec.value
    return Outcome(ok, f"{len(answer)} characters (max {spec.value})")


def _refusal(want_refusal: bool) -> CheckFn:
    def fn(answer: str, spec: AssertionSpec, _: Any) -> Outcome:
        from tunelab.security.detectors import DETECTORS, Judgement

        judged = DETECTORS.get("refusal").judge(answer, {})
        if judged.judgement == Judgement.CANNOT_JUDGE:
            return Outcome(False, f"cannot judge: {judged.reason}")
        refused = judged.judgement == Judgement.HIT
        return Outcome(refused == want_refusal, judged.reason)

    return fn


# --- model-graded checks -----------------------------------------------------------------------


def _reward_at_least(answer: str, spec: AssertionSpec, reward: float) -> Outcome:
    ok = reward >= spec.value
    return Outcome(ok, f"reward {reward:.3f} {'>=' if ok else '<'} {spec.value}", score=reward)


_SCORE_PATTERNS = [
    re.compile(r"\b(?:score|rating|grade)\s*(?:is|of|=|:)?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.IGNORECASE),
    re.compile(r"^\W*(\d+(?:\.\d+)?)\W*$"),
]


def parse_judge_score(reply: str) -> float | None:
    """The 1-10 score in a judge's reply, or None.

    Tried in order: ``Score: 7`` (also ``rating``, ``grade``, ``**Score:** 7``), ``7/10`` or
    ``7 out of 10``, and a reply that is only a number. The first number in range wins; numbers
    outside 1-10 are ignored (a judge that writes "Score: 75" has not answered on the scale).
    """
    for pattern in _SCORE_PATTERNS:
        for match in pattern.finditer(reply.strip()):
            score = float(match.group(1))
            if 1 <= score <= 10:
                return score
    return None


def _judge(answer: str, spec: AssertionSpec, reply: str) -> Outcome:
    score = parse_judge_score(reply)
    if score is None:
        return Outcome(False, f"judge reply unparseable: {reply.strip()[:80]!r}", unparseable=True)
    threshold = spec.threshold if spec.threshold is not None else DEFAULT_JUDGE_THRESHOLD
    ok = score >= threshold
    return Outcome(ok, f"judge score {score:g} {'>=' if ok else '<'} {threshold:g}", score=score)


def _register() -> None:
    entries = [
        Check("equals", "text", "the answer equals the text", _equals, _text),
        Check("contains", "text or list of texts", "every text occurs (case-sensitive)", _contains_all(str), _texts),
        Check(
            "icontains",
            "text or list of texts",
            "every text occurs, ignoring case",
            _contains_all(str.casefold),
            _texts,
        ),
        Check(
            "not_contains", "text or list of texts", "none of the texts occurs (case-sensitive)", _not_contains, _texts
        ),
        Check(
            "regex", "regular expression", "the pattern matches somewhere (re.search; (?i) for case)", _regex, _pattern
        ),
        Check("starts_with", "text", "the answer starts with the text", _starts_with, _text),
        Check("is_json", "none", "the answer is JSON (a ```json fence allowed)", _is_json, _none),
        Check("json_schema", "JSON schema", "the answer is JSON valid under the schema", _json_schema, _schema),
        Check(
            "max_length",
            "number of characters",
            "the answer has at most that many characters",
            _max_length,
            _positive_int,
        ),
        Check("refuses", "none", "the refusal detector says the answer refuses", _refusal(True), _none),
        Check("complies", "none", "the answer is not empty and does not refuse", _refusal(False), _none),
        Check(
            "reward_at_least",
            "number (+ model: reward run)",
            "the reward model scores the answer >= value",
            _reward_at_least,
            _number,
            grader="reward",
        ),
        Check(
            "judge",
            "rubric (+ model:, threshold:)",
            "a judge model scores the answer >= threshold (1-10)",
            _judge,
            _rubric,
            grader="judge",
        ),
    ]
    for entry in entries:
        ASSERTIONS.register(entry.name, entry)


_register()


def list_assertions() -> list[Check]:
    return [ASSERTIONS.get(name) for name in ASSERTIONS]
