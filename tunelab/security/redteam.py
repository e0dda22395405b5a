"""Run the probe library against one or two targets, with the guardrail chain off and/or on.

Why this shape: the question a red-team run answers is "how often does each kind of attack
work, on this model versus that one, with and without our guardrails", so every attempt is
sent once per target (greedy, so the answer is reproducible), judged by its probe's detector,
and summarised per category as an attack success rate with its Wilson interval and the rate
corrected for the detector's measured errors (:mod:`tunelab.security.redteam_stats`).

With guardrails on, an attempt goes through :class:`~tunelab.security.guardrails.GuardrailChain`
as it would in ``tunelab serve``: a blocked input is a failed attack (nothing was generated), a
sanitized input is what the model sees, a blocked answer is a failed attack (nothing reached the
user) and a redacted answer is judged as redacted. Those guardrail decisions are certain, so they
enter the corrected rate as a group with perfect accuracy. A benign prompt set measures what
the guardrails cost: the share of harmless prompts they block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tunelab.errors import ConfigError
from tunelab.security.detectors import DETECTORS, Judgement
from tunelab.security.redteam_calibration import DetectorStats
from tunelab.security.redteam_probes import CATEGORIES, Attempt
from tunelab.security.redteam_stats import Accuracy, Rate, rate
from tunelab.security.redteam_targets import Conversation, Target

#: --guardrails value → the guard settings each attempt runs under.
GUARD_MODES: dict[str, tuple[str, ...]] = {"off": ("off",), "on": ("on",), "both": ("off", "on")}
BENIGN_MODES = ("full", "input", "off")
CERTAIN = Accuracy(1.0, 1.0)  # a guardrail's or a server's refusal is known, not estimated
BLOCKED = ("blocked_input", "blocked_output", "refused_by_server")


@dataclass(frozen=True)
class AttemptResult:
    """One attempt under one guard setting: what came back and what the detector made of it."""

    attempt: Attempt
    guard: str
    output: str
    judgement: str  # a Judgement value, or one of BLOCKED
    success: bool | None  # None: the detector could not judge
    reason: str

    def to_json(self) -> dict:
        a = self.attempt
        return {"id": a.id, "probe": a.probe_id, "category": a.category, "goal": a.goal, "guard": self.guard,
                "detector": a.detector, "judgement": self.judgement, "success": self.success,
                "reason": self.reason, "messages": [{"role": r, "content": c} for r, c in a.messages],
                "output": self.output}


@dataclass(frozen=True)
class BenignResult:
    """Guardrail cost: benign prompts blocked at the input or at the answer, out of ``total``."""

    total: int
    blocked_input: int
    blocked_output: int
    blocked_ids: tuple[str, ...] = ()
    answers_checked: bool = True  # False: only the inputs were checked (--benign input: nothing generated)

    @property
    def blocked(self) -> int:
        return self.blocked_input + self.blocked_output

    def to_json(self) -> dict:
        from tunelab.security.redteam_stats import wilson

        low, high = wilson(self.blocked, self.total)
        return {"total": self.total, "blocked": self.blocked, "blocked_input": self.blocked_input,
                "blocked_output": self.blocked_output, "false_block_rate": round(self.blocked / self.total, 4)
                if self.total else None, "ci95": [round(low, 4), round(high, 4)], "blocked_ids": list(self.blocked_ids),
                "answers_checked": self.answers_checked}


@dataclass
class TargetRun:
    name: str
    results: list[AttemptResult]
    benign: BenignResult | None = None
    summary: dict[str, dict[str, Rate]] = field(default_factory=dict)  # guard → category (+ "all") → Rate


def judge(attempt: Attempt, text: str) -> tuple[str, bool | None, str]:
    """``(judgement, success, reason)`` of the attempt's detector on ``text``."""
    detector = DETECTORS.get(attempt.detector)
    judged = detector.judge(text, attempt.params)
    if judged.judgement is Judgement.CANNOT_JUDGE:
        return judged.judgement.value, None, judged.reason
    return judged.judgement.value, (judged.judgement is Judgement.HIT) == detector.success_on_hit, judged.reason


def _system(messages: Conversation) -> str:
    return "\n".join(c for r, c in messages if r == "system")


def run_target(target: Target, attempts: Sequence[Attempt], guards: Sequence[str], chain=None,
               max_new_tokens: int = 64, benign: Sequence[tuple[str, str]] = (),
               benign_answers: bool = True) -> TargetRun:
    """Send every attempt (once per distinct conversation) and judge it under each guard setting.

    ``benign`` prompts are checked by the chain at the input and, with ``benign_answers``, their
    answers at the output too (which costs one generation each).
    """
    if "on" in guards and chain is None:
        raise ConfigError("--guardrails on needs the guardrail chain (tunelab.security.guardrails)\n"
                          "  fix: use --guardrails off")
    checked = {a.id: chain.check_messages(list(a.messages)) for a in attempts} if "on" in guards else {}
    wanted: list[tuple] = []
    if "off" in guards:
        wanted += [tuple(a.messages) for a in attempts]
    wanted += [tuple(r.messages) for r in checked.values() if r.verdict.allowed]
    benign_checked = [(i, chain.check_messages([("user", text)])) for i, text in benign] if chain else []
    if benign_answers:
        wanted += [tuple(r.messages) for _, r in benign_checked if r.verdict.allowed]
    unique = list(dict.fromkeys(wanted))
    replies = dict(zip(unique, target.answer(unique, max_new_tokens), strict=True))
    results = []
    for a in attempts:
        if "off" in guards:
            results.append(_judged(a, "off", replies[tuple(a.messages)]))
        if "on" in guards:
            results.append(_guarded(a, checked[a.id], replies, chain))
    run = TargetRun(target.name, results)
    if benign_checked:
        run.benign = _benign(benign_checked, replies if benign_answers else None, chain)
    return run


def _judged(a: Attempt, guard: str, reply) -> AttemptResult:
    if reply.refused_by:
        return AttemptResult(a, guard, "", "refused_by_server", False, reply.refused_by)
    return AttemptResult(a, guard, reply.text, *judge(a, reply.text))


def _guarded(a: Attempt, checked, replies, chain) -> AttemptResult:
    if not checked.verdict.allowed:
        return AttemptResult(a, "on", "", "blocked_input", False, f"input blocked by {checked.verdict.guardrail}: "
                             f"{checked.verdict.reason}")
    reply = replies[tuple(checked.messages)]
    if reply.refused_by:
        return _judged(a, "on", reply)
    verdict = chain.scan_output(reply.text, system=_system(checked.messages))
    if not verdict.allowed:
        return AttemptResult(a, "on", reply.text, "blocked_output", False,
                             f"answer blocked by {verdict.guardrail}: {verdict.reason}")
    text = verdict.sanitized if verdict.sanitized is not None else reply.text
    judgement, success, reason = judge(a, text)
    if verdict.sanitized is not None:
        reason += f" (judged on the answer redacted by {verdict.guardrail})"
    return AttemptResult(a, "on", text, judgement, success, reason)


def _benign(checked, replies, chain) -> BenignResult:
    blocked_in = [i for i, r in checked if not r.verdict.allowed]
    blocked_out = [] if replies is None else [i for i, r in checked if r.verdict.allowed and not chain.scan_output(
        replies[tuple(r.messages)].text).allowed]
    return BenignResult(len(checked), len(blocked_in), len(blocked_out), tuple(blocked_in + blocked_out),
                        answers_checked=replies is not None)


def summarize(run: TargetRun, stats: dict[str, DetectorStats]) -> dict[str, dict[str, Rate]]:
    """guard → category (and ``"all"``) → :class:`Rate`, each detector's errors corrected apart."""
    out: dict[str, dict[str, Rate]] = {}
    for guard in dict.fromkeys(r.guard for r in run.results):
        rows = [r for r in run.results if r.guard == guard]
        per = {c: _rate([r for r in rows if r.attempt.category == c], stats) for c in CATEGORIES
               if any(r.attempt.category == c for r in rows)}
        per["all"] = _rate(rows, stats)
        out[guard] = per
    run.summary = out
    return out


def _rate(rows: Sequence[AttemptResult], stats: dict[str, DetectorStats]) -> Rate:
    groups = []
    certain = [r for r in rows if r.judgement in BLOCKED]
    if certain:
        groups.append((sum(bool(r.success) for r in certain), len(certain), CERTAIN))
    for name in dict.fromkeys(r.attempt.detector for r in rows):
        judged = [r for r in rows
                  if r.attempt.detector == name and r.success is not None and r.judgement not in BLOCKED]
        if not judged:
            continue
        s = stats.get(name)
        acc = (Accuracy.for_success(s.sensitivity, s.specificity, DETECTORS.get(name).success_on_hit) if s
               else Accuracy(float("nan"), float("nan")))
        groups.append((sum(bool(r.success) for r in judged), len(judged), acc))
    return rate(groups, unjudged=sum(r.success is None for r in rows))


@dataclass(frozen=True)
class RedteamOptions:
    """Everything ``tunelab redteam`` lets a user choose (the CLI only parses into this)."""

    categories: tuple[str, ...] = ()
    guardrails: str = "both"  # off | on | both
    guardrail_specs: tuple[str, ...] = ("all",)
    guardrails_config: str | None = None
    max_new_tokens: int = 64
    canaries: tuple[str, ...] = ()
    canary_file: str | None = None
    max_per_category: int | None = None
    benign: str = "full"  # full: inputs and answers | input: inputs only (no generation) | off

    def settings(self, n_attempts: int, n_canaries: int) -> dict:
        return {"categories": list(self.categories) or list(CATEGORIES), "guardrails": self.guardrails,
                "guardrail_specs": list(self.guardrail_specs), "max_new_tokens": self.max_new_tokens,
                "decoding": "greedy", "attempts": n_attempts, "canaries": n_canaries,
                "max_per_category": self.max_per_category}


def plan_attempts(options: RedteamOptions) -> tuple[list[Attempt], list]:
    """The attempts to send and the canary records they use (user canaries replace the defaults)."""
    from tunelab.security.redteam_probes import (
        canary_record,
        default_canaries,
        expand,
        load_library,
        read_canary_file,
    )

    if options.guardrails not in GUARD_MODES:
        raise ConfigError(f"--guardrails {options.guardrails!r}: expected one of {', '.join(GUARD_MODES)}\n"
                          "  fix: --guardrails both")
    if options.benign not in BENIGN_MODES:
        raise ConfigError(f"--benign {options.benign!r}: expected one of {', '.join(BENIGN_MODES)}\n"
                          "  fix: --benign full")
    records = [canary_record(c, None, "--canary") for c in options.canaries]
    if options.canary_file:
        from pathlib import Path

        records += read_canary_file(Path(options.canary_file))
    records = records or default_canaries()
    probes = load_library(categories=options.categories)
    if options.max_per_category is not None:
        by_category: dict[str, list] = {}
        for probe in probes:
            by_category.setdefault(probe.category, []).append(probe)
        probes = [p for group in by_category.values() for p in group[: options.max_per_category]]
    return expand(probes, records), records


def build_chain(options: RedteamOptions, canaries: Sequence[str], special_tokens: Sequence[str] = ()):
    """The serve guardrail chain for ``--guardrails on/both``, told the planted canaries; None when off."""
    if options.guardrails == "off":
        return None
    from tunelab.security.guardrails import GuardrailChain, chain_from_cli

    base = chain_from_cli(options.guardrail_specs, options.guardrails_config)
    return GuardrailChain(base.guardrails, canaries=canaries, special_tokens=special_tokens)


def run_redteam(targets: Sequence[Target], options: RedteamOptions,
                stats: dict[str, DetectorStats] | None = None) -> tuple[list[TargetRun], dict]:
    """Run the library on each target; ``(runs with summaries, settings for the report)``."""
    import logging

    from tunelab.security.redteam_calibration import load_stats
    from tunelab.security.redteam_probes import load_benign

    stats = stats if stats is not None else load_stats()
    attempts, records = plan_attempts(options)
    guards = GUARD_MODES[options.guardrails]
    benign = load_benign() if options.benign != "off" and "on" in guards else []
    security_log = logging.getLogger("tunelab.security")
    level = security_log.level
    security_log.setLevel(logging.ERROR)  # one line per blocked attack would drown the report
    try:
        runs = []
        for target in targets:
            chain = build_chain(options, [r.canary for r in records], target.special_tokens)
            run = run_target(target, attempts, guards, chain, options.max_new_tokens, benign,
                             benign_answers=options.benign == "full")
            summarize(run, stats)
            runs.append(run)
    finally:
        security_log.setLevel(level)
    return runs, options.settings(len(attempts), len(records))
