"""Grades for model-graded assertions: a tunelab reward model's score, an LLM judge's rubric score.

Both are batched over every answer of a suite run that needs them (one reward pass, one batch of
judge generations per grading model) and cached like answers (:mod:`tunelab.evaluate.cache`), so
a re-run grades only new answers and loads no grading model when nothing changed.

The judge follows the single-answer grading of Zheng et al. 2023 ("Judging LLM-as-a-Judge with
MT-Bench and Chatbot Arena", arXiv:2306.05685): the judge sees the rubric, the conversation and
the answer, and replies with a 1-10 score, decoded greedily so a grade is reproducible. A reply
without a score is reported as unparseable (never silently counted as a low score);
:func:`tunelab.evaluate.assertions.parse_judge_score` says what is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunelab.errors import ConfigError
from tunelab.evaluate.cache import EvalCache, cache_key
from tunelab.evaluate.suite import AssertionSpec

JUDGE_SYSTEM = (
    "You are a strict, fair grader. Score the assistant's answer against the rubric on a scale from 1 to 10: "
    "10 = fully meets the rubric, 1 = does not meet it at all. Reply with one line: Score: N"
)
JUDGE_MAX_NEW_TOKENS = 48


def judge_conversation(rubric: str, conversation: Sequence[dict], answer: str) -> list[dict]:
    """The judge's input: its instructions, then the rubric, the graded conversation and the answer."""
    shown = "\n".join(f"[{m['role']}] {m['content']}" for m in conversation)
    user = f"Rubric: {rubric}\n\nConversation:\n{shown}\n\nAnswer to grade:\n{answer}\n\nScore (1-10):"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class GradeRequest:
    spec: AssertionSpec
    conversation: list[dict]
    answer: str


class Graders:
    """Grades requests of ``reward_at_least`` (a float) and ``judge`` (the judge's reply text).

    Args:
        cache: where grades are kept.
        default_judge: judge model for ``judge`` assertions without ``model:`` (CLI ``--judge``).
        batch_size: answers per forward pass of a grading model.
        judges: judge models already opened, by the spec assertions name them with.
    """

    def __init__(
        self,
        cache: EvalCache,
        *,
        default_judge: str | None = None,
        batch_size: int = 8,
        judges: dict[str, Any] | None = None,
    ):
        self.cache = cache
        self.default_judge = default_judge
        self.batch_size = batch_size
        self.graded = 0  #: grades computed (not from the cache)
        self._judges: dict[str, Any] = dict(judges or {})  # spec -> opened EvalModel

    def grade(self, requests: Sequence[GradeRequest]) -> list[Any]:
        from tunelab.evaluate.assertions import get_check

        grades: list[Any] = [None] * len(requests)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, req in enumerate(requests):
            kind = get_check(req.spec.type).grader
            if kind is not None:
                groups.setdefault((kind, self._model_for(kind, req.spec)), []).append(i)
        for (kind, spec), rows in groups.items():
            grade_fn = self._rewards if kind == "reward" else self._judge_replies
            for i, value in zip(rows, grade_fn(spec, [requests[i] for i in rows]), strict=True):
                grades[i] = value
        return grades

    def _model_for(self, kind: str, spec: AssertionSpec) -> str:
        model = spec.model or (self.default_judge if kind == "judge" else None)
        if model is None:
            raise ConfigError(
                f"a {spec.type} assertion has no judge model.\n"
                "  fix: add model: MODEL (a name, run folder or http://host:port/v1#id) to it, or pass --judge MODEL"
            )
        return model

    def _cached(self, kind: str, keys: list[str], compute) -> list[Any]:
        found = self.cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            values = compute(missing)
            self.graded += len(missing)
            new = {keys[i]: v for i, v in zip(missing, values, strict=True)}
            self.cache.put_many(kind, new)
            found.update(new)
        return [found[k] for k in keys]

    def _rewards(self, run: str, requests: list[GradeRequest]) -> list[float]:
        from tunelab.evaluate.models import local_key

        _, model_key = local_key(run)
        keys = [cache_key("reward", model_key, r.conversation, r.answer) for r in requests]

        def compute(rows: list[int]) -> list[float]:
            from tunelab.methods.reward import RewardScorer

            scorer = RewardScorer.load(run)
            pairs = [(requests[i].conversation, requests[i].answer) for i in rows]
            return [float(s) for s in scorer.score(pairs, batch_size=self.batch_size)]

        return self._cached("reward", keys, compute)

    def judge(self, spec: str):
        from tunelab.evaluate.models import open_model

        if spec not in self._judges:
            self._judges[spec] = open_model(spec, batch_size=self.batch_size)
        return self._judges[spec]

    def _judge_replies(self, spec: str, requests: list[GradeRequest]) -> list[str]:
        judge = self.judge(spec)
        prompts = [judge_conversation(r.spec.value, r.conversation, r.answer) for r in requests]
        keys = [cache_key("judge", judge.key, p, JUDGE_MAX_NEW_TOKENS) for p in prompts]

        def compute(rows: list[int]) -> list[str]:
            from tunelab.infer.types import SamplingParams

            params = SamplingParams(max_new_tokens=JUDGE_MAX_NEW_TOKENS, temperature=0.0)
            return judge.generate([prompts[i] for i in rows], params)

        return self._cached("judge", keys, compute)

    def close(self) -> None:
        for judge in self._judges.values():
            judge.close()
