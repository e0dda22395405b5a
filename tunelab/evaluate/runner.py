"""Run a suite against models: generate (batched, cached), grade, score each case, compare models.

Scoring, per case and model:

* a sample's score is the weighted share of its assertions that pass,
  ``sum(w_i * passed_i) / sum(w_i)``; the sample passes when the score reaches the case's
  ``threshold`` (default 1.0: every assertion);
* a case is sampled ``repeat`` times and passes when at least ``min_pass_rate`` of its samples
  pass (default 1.0), so a case that passes by luck in one sample of three does not count;
* a model's pass rate (overall, and per tag) is the weighted share of cases that pass
  (``Case.weight``).

Sampling: one sample is greedy by default (reproducible); with ``repeat > 1`` the samples use
temperature 0.7 unless a temperature is given, sample ``k`` with seed ``seed + k`` (the same
seeds for every model, so models see the same draws of the sampler). A regression is a case that
passes on the first model and fails on a later one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tunelab.evaluate.assertions import Outcome, get_check
from tunelab.evaluate.cache import EvalCache, cache_key
from tunelab.evaluate.grading import GradeRequest, Graders
from tunelab.evaluate.models import EvalModel
from tunelab.evaluate.suite import LoadedSuite, ResolvedCase

REPEAT_TEMPERATURE = 0.7
UNTAGGED = "(untagged)"


@dataclass(frozen=True)
class GenerationSettings:
    """What, besides the model and the conversation, decides an answer (part of the cache key)."""

    max_new_tokens: int = 128  #: a case's own max_new_tokens wins unless ``override`` is set
    temperature: float | None = None  #: None: greedy for one sample, REPEAT_TEMPERATURE when repeating
    top_p: float = 1.0
    seed: int = 0
    repeat: int | None = None  #: CLI --repeat: replaces every case's repeat
    override_max_new_tokens: bool = False  #: CLI --max-new-tokens given: it wins over the cases'

    def for_case(self, case: ResolvedCase) -> tuple[int, float, int]:
        """``(max_new_tokens, temperature, samples)`` of one case."""
        samples = self.repeat or case.repeat
        tokens = (
            self.max_new_tokens if self.override_max_new_tokens or case.max_new_tokens is None else case.max_new_tokens
        )
        temperature = self.temperature if self.temperature is not None else (REPEAT_TEMPERATURE if samples > 1 else 0.0)
        return tokens, temperature, samples


@dataclass
class AssertionResult:
    type: str
    weight: float
    passed: bool
    reason: str
    score: float | None = None
    unparseable: bool = False


@dataclass
class SampleResult:
    answer: str
    score: float  #: weighted share of passing assertions
    passed: bool
    assertions: list[AssertionResult]
    cached: bool


@dataclass
class CaseResult:
    case: ResolvedCase
    samples: list[SampleResult]

    @property
    def pass_rate(self) -> float:
        return sum(s.passed for s in self.samples) / len(self.samples)

    @property
    def passed(self) -> bool:
        return self.pass_rate >= self.case.min_pass_rate - 1e-12


@dataclass
class ModelResult:
    name: str
    key: str
    cases: list[CaseResult]
    generated: int = 0  #: answers generated in this run (the rest came from the cache)
    cached: int = 0
    seconds: float = 0.0

    def pass_rate(self, tag: str | None = None) -> float | None:
        """Weighted share of passing cases (with ``tag`` only); None when no case has the tag."""
        rows = [c for c in self.cases if tag is None or tag in (c.case.tags or [UNTAGGED])]
        total = sum(c.case.weight for c in rows)
        return sum(c.case.weight for c in rows if c.passed) / total if total > 0 else None

    @property
    def passed_count(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def unparseable(self) -> int:
        return sum(a.unparseable for c in self.cases for s in c.samples for a in s.assertions)


@dataclass
class Regression:
    case_id: str
    tags: list[str]
    baseline: str
    model: str
    reasons: list[str]  #: the failing assertions on ``model``


@dataclass
class SuiteRun:
    suite: LoadedSuite
    settings: GenerationSettings
    models: list[ModelResult] = field(default_factory=list)

    def below(self, min_pass: float) -> list[str]:
        """Names of the models whose pass rate is below ``min_pass`` (the CI gate)."""
        return [m.name for m in self.models if (m.pass_rate() or 0.0) < min_pass]

    def tags(self) -> list[str]:
        """Tags in first-seen order; ``(untagged)`` only when some cases are tagged and some not."""
        if not any(c.tags for c in self.suite.cases):
            return []
        return list(dict.fromkeys(t for c in self.suite.cases for t in (c.tags or [UNTAGGED])))

    def regressions(self) -> list[Regression]:
        """Cases that pass on the first model and fail on a later one."""
        if len(self.models) < 2:
            return []
        base, found = self.models[0], []
        for other in self.models[1:]:
            for before, after in zip(base.cases, other.cases, strict=True):
                if before.passed and not after.passed:
                    reasons = [
                        f"{a.type}: {a.reason}"
                        for s in after.samples
                        if not s.passed
                        for a in s.assertions
                        if not a.passed
                    ]
                    found.append(
                        Regression(
                            before.case.id, before.case.tags, base.name, other.name, list(dict.fromkeys(reasons))
                        )
                    )
        return found


def score_sample(case: ResolvedCase, answer: str, grades: Sequence[object], cached: bool) -> SampleResult:
    """Check every assertion of ``case`` on ``answer`` and score the sample (module docstring)."""
    results = []
    for spec, grade in zip(case.assertions, grades, strict=True):
        outcome: Outcome = get_check(spec.type).check(answer, spec, grade)
        results.append(
            AssertionResult(spec.type, spec.weight, outcome.passed, outcome.reason, outcome.score, outcome.unparseable)
        )
    total = sum(a.weight for a in results)
    score = sum(a.weight for a in results if a.passed) / total
    return SampleResult(answer, score, score >= case.threshold - 1e-12, results, cached)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def generate_answers(
    model: EvalModel,
    cases: Sequence[ResolvedCase],
    settings: GenerationSettings,
    cache: EvalCache,
    log: Callable[[str], None] = _log,
) -> tuple[list[list[str]], list[list[bool]], int]:
    """Every sample's answer per case, whether it came from the cache, and how many were generated.

    Misses are generated in one :meth:`EvalModel.generate` call per (length, temperature) group.
    """
    keys: list[list[str]] = []
    groups: dict[tuple[int, float], list[tuple[int, int]]] = {}
    for ci, case in enumerate(cases):
        tokens, temperature, samples = settings.for_case(case)
        row = []
        for k in range(samples):
            seed = settings.seed + k if temperature > 0 else None  # greedy: one answer serves every sample
            row.append(cache_key("answer", model.key, case.conversation, tokens, temperature, settings.top_p, seed))
            groups.setdefault((tokens, temperature), []).append((ci, k))
        keys.append(row)
    found = cache.get_many(k for row in keys for k in row)
    cached = [[k in found for k in row] for row in keys]
    todo = {key: (ci, k) for ci, row in enumerate(keys) for k, key in enumerate(row) if key not in found}
    if todo:
        log(f"{model.name}: generating {len(todo)} answer(s), {sum(map(sum, cached))} cached")
    from_cache = len(found)
    for (tokens, temperature), members in groups.items():
        wanted = list(dict.fromkeys(keys[ci][k] for ci, k in members if keys[ci][k] in todo))
        if not wanted:
            continue
        from tunelab.infer.types import SamplingParams

        params = SamplingParams(max_new_tokens=tokens, temperature=temperature, top_p=settings.top_p)
        convs = [cases[todo[key][0]].conversation for key in wanted]
        seeds = [settings.seed + todo[key][1] for key in wanted]
        answers = model.generate(convs, params, seeds=seeds)
        new = dict(zip(wanted, answers, strict=True))
        cache.put_many("answer", new)
        found.update(new)
    generated = len(found) - from_cache
    return [[found[k] for k in row] for row in keys], cached, generated


def run_model(
    model: EvalModel,
    suite: LoadedSuite,
    settings: GenerationSettings,
    cache: EvalCache,
    graders: Graders,
    log: Callable[[str], None] = _log,
) -> ModelResult:
    """Answer and grade every case of ``suite`` with ``model``."""
    start = time.perf_counter()
    answers, cached, generated = generate_answers(model, suite.cases, settings, cache, log)
    requests, where = [], []
    for ci, case in enumerate(suite.cases):
        for k, answer in enumerate(answers[ci]):
            for ai, spec in enumerate(case.assertions):
                if get_check(spec.type).grader is not None:
                    requests.append(GradeRequest(spec, case.conversation, answer.strip()))
                    where.append((ci, k, ai))
    grades: dict[tuple[int, int, int], object] = dict(zip(where, graders.grade(requests), strict=True))
    cases = []
    for ci, case in enumerate(suite.cases):
        samples = [
            score_sample(case, answer, [grades.get((ci, k, ai)) for ai in range(len(case.assertions))], cached[ci][k])
            for k, answer in enumerate(answers[ci])
        ]
        cases.append(CaseResult(case, samples))
    from_cache = sum(map(sum, cached))
    return ModelResult(model.name, model.key, cases, generated, from_cache, time.perf_counter() - start)


def run_suite(
    suite: LoadedSuite,
    models: Sequence[EvalModel],
    settings: GenerationSettings | None = None,
    *,
    cache: EvalCache | None = None,
    graders: Graders | None = None,
    log: Callable[[str], None] = _log,
) -> SuiteRun:
    """Run ``suite`` on each model in order (the first is the baseline for regressions)."""
    settings = settings or GenerationSettings()
    cache = cache if cache is not None else EvalCache()
    graders = graders or Graders(cache)
    run = SuiteRun(suite, settings)
    for model in models:
        run.models.append(run_model(model, suite, settings, cache, graders, log))
    return run
