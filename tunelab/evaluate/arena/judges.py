"""Judges of the arena: who decides which of two answers is better.

Three kinds, in the explicit registry :data:`JUDGES` (``--judge NAME:ARG``):

* ``reward:RUN`` — a tunelab reward model (``method: reward``, :mod:`tunelab.methods.reward`)
  scores each answer; the higher score wins, a gap within ``margin`` is a tie.
* ``llm:MODEL`` — a model asked which answer is better (the pairwise "LLM-as-a-judge" of
  Zheng et al. 2023, arXiv:2306.05685): any :func:`tunelab.evaluate.models.open_model` spec, a
  local model or an OpenAI-compatible URL. LLM judges prefer the answer shown first (that
  paper measured it for GPT-4 and weaker models much more), so every pair is asked in **both
  orders**; the pair's outcome is the verdict both orders agree on, and a tie when they
  disagree (the paper's conservative rule). Ties are allowed answers.
* ``human:VOTES.sqlite`` — the votes people cast on ``tunelab arena serve`` pages
  (:mod:`tunelab.evaluate.arena.store`); every vote is one battle.

Each judge returns :class:`Judgment` rows (one per order asked, or per vote), and
:func:`judge_report` measures the judge itself: its **position consistency** (the share of
pairs judged the same way in both orders; 1 for an unbiased judge, by construction for a reward
model, which never sees an order) and its **first-slot win rate** (the share of decisive
verdicts that chose the answer shown first; 0.5 for an unbiased judge).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from tunelab.errors import ConfigError
from tunelab.evaluate.arena.ratings import Battle, Outcome
from tunelab.infer.types import SamplingParams
from tunelab.registry import Registry

Verdict = Literal["first", "second", "tie", "both_bad"]


@dataclass(frozen=True)
class Pair:
    """Two models' answers to one prompt."""

    prompt_id: str
    prompt: str
    model_a: str
    answer_a: str
    model_b: str
    answer_b: str
    system: str | None = None


@dataclass(frozen=True)
class Judgment:
    """One verdict on a pair shown in one order (``first`` is the model whose answer came first)."""

    prompt_id: str
    model_a: str
    model_b: str
    first: str
    verdict: Verdict
    judge: str
    detail: str = ""  # the LLM's reply, the two reward scores, the voter id
    parsed: bool = True  # False: the judge's reply named no verdict (counted as a tie)

    @property
    def outcome(self) -> Outcome:
        """The verdict relative to ``(model_a, model_b)``."""
        if self.verdict in ("tie", "both_bad"):
            return self.verdict
        first_won = self.verdict == "first"
        return "a" if first_won == (self.first == self.model_a) else "b"


class Judge(Protocol):
    name: str
    per_vote: bool  # True: each judgment is a battle; False: a pair's two orders make one battle

    def judge(self, pairs: Sequence[Pair]) -> list[Judgment]: ...

    def close(self) -> None: ...


def both_orders(pair: Pair) -> list[tuple[str, str, str, str]]:
    """``(first model, first answer, second model, second answer)`` for each order of ``pair``."""
    return [
        (pair.model_a, pair.answer_a, pair.model_b, pair.answer_b),
        (pair.model_b, pair.answer_b, pair.model_a, pair.answer_a),
    ]


# --------------------------------------------------------------------------- reward model


@dataclass
class RewardJudge:
    """The answer with the higher reward-model score wins; ``|gap| <= margin`` is a tie."""

    run: str
    margin: float = 0.0
    per_vote: bool = False
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"reward:{Path(self.run).name}"
        self._scorer = None

    def judge(self, pairs: Sequence[Pair]) -> list[Judgment]:
        from tunelab.methods.reward import RewardScorer

        if self._scorer is None:
            self._scorer = RewardScorer.load(self.run)
        keys = sorted({(p.system or "", p.prompt, ans) for p in pairs for ans in (p.answer_a, p.answer_b)})
        prompts = [[{"role": "system", "content": s}] * bool(s) + [{"role": "user", "content": q}] for s, q, _ in keys]
        scores = dict(
            zip(keys, self._scorer.score([(q, a) for q, (*_, a) in zip(prompts, keys, strict=True)]), strict=True)
        )
        out = []
        for p in pairs:
            for first, first_ans, _, second_ans in both_orders(p):
                s1, s2 = scores[(p.system or "", p.prompt, first_ans)], scores[(p.system or "", p.prompt, second_ans)]
                verdict = "tie" if abs(s1 - s2) <= self.margin else ("first" if s1 > s2 else "second")
                detail = f"scores {s1:.4f} {s2:.4f}"
                out.append(Judgment(p.prompt_id, p.model_a, p.model_b, first, verdict, self.name, detail))
        return out

    def close(self) -> None:
        self._scorer = None


# --------------------------------------------------------------------------- LLM judge

JUDGE_SYSTEM = (
    "You compare two answers to the same question as an impartial judge. Judge helpfulness, correctness "
    "and clarity; ignore length, order and style unless they hurt the answer."
)
JUDGE_PROMPT = """Question:
{prompt}

[Answer A]
{first}
[End of answer A]

[Answer B]
{second}
[End of answer B]

Which answer is better? Reply with [[A]] if answer A is better, [[B]] if answer B is better, or [[C]] for a tie."""

_BRACKETED = re.compile(r"\[\[\s*(A|B|C|TIE)\s*\]\]", re.IGNORECASE)
_LEADING = re.compile(r"^\W*(?:answer\s+)?(A|B|C|tie)\b", re.IGNORECASE)


def parse_verdict(reply: str) -> Verdict | None:
    """``first`` / ``second`` / ``tie`` from a judge's reply; ``None`` if it names none.

    ``[[A]]`` / ``[[B]]`` / ``[[C]]`` anywhere (the last one, in case the reply restates the
    instructions first), else a reply that starts with ``A``, ``B``, ``C`` or ``tie``.
    """
    found = _BRACKETED.findall(reply)
    letter = found[-1] if found else (m.group(1) if (m := _LEADING.match(reply.strip())) else None)
    if letter is None:
        return None
    return {"A": "first", "B": "second"}.get(letter.upper(), "tie")


@dataclass
class LlmJudge:
    """Pairwise judge model, asked in both orders; an unreadable reply counts as a tie."""

    spec: str
    batch_size: int = 8
    max_new_tokens: int = 32
    per_vote: bool = False
    name: str = field(init=False)

    def __post_init__(self) -> None:
        from tunelab.evaluate.models import open_model

        self.model = open_model(self.spec, batch_size=self.batch_size)
        self.name = f"llm:{self.model.name}"

    def conversation(self, pair: Pair, first: str, second: str) -> list[dict]:
        question = pair.prompt if pair.system is None else f"(system prompt: {pair.system})\n{pair.prompt}"
        return [
            {"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": JUDGE_PROMPT.format(prompt=question, first=first, second=second)},
        ]

    def judge(self, pairs: Sequence[Pair]) -> list[Judgment]:
        asked = [(p, order) for p in pairs for order in both_orders(p)]
        conversations = [self.conversation(p, order[1], order[3]) for p, order in asked]
        replies = self.model.generate(conversations, SamplingParams(max_new_tokens=self.max_new_tokens))
        out = []
        for (p, order), reply in zip(asked, replies, strict=True):
            verdict = parse_verdict(reply)
            out.append(
                Judgment(
                    p.prompt_id, p.model_a, p.model_b, order[0], verdict or "tie", self.name, reply, verdict is not None
                )
            )
        return out

    def close(self) -> None:
        self.model.close()


# --------------------------------------------------------------------------- human votes


@dataclass
class HumanJudge:
    """The stored votes on each pair (every vote is a battle); pairs nobody voted on are skipped."""

    db: str
    per_vote: bool = True
    name: str = field(init=False)

    def __post_init__(self) -> None:
        if not Path(self.db).is_file():
            raise ConfigError(
                f"--judge human:{self.db}: no such vote database\n"
                "  fix: collect votes with `tunelab arena serve DIR --db FILE` first"
            )
        self.name = f"human:{Path(self.db).name}"
        self._votes = None

    def judge(self, pairs: Sequence[Pair]) -> list[Judgment]:
        from tunelab.evaluate.arena.store import VoteStore

        if self._votes is None:  # read once: run_arena asks in chunks
            self._votes = VoteStore(self.db).votes()
        wanted = {(p.prompt_id, frozenset((p.model_a, p.model_b))): p for p in pairs}
        out = []
        for vote in self._votes:
            pair = wanted.get((vote.prompt_id, frozenset((vote.model_left, vote.model_right))))
            if pair is not None:
                out.append(vote_judgment(vote, self.name, (pair.model_a, pair.model_b)))
        return out

    def close(self) -> None:
        pass


def vote_judgment(vote, judge: str, models: tuple[str, str] | None = None) -> Judgment:
    """A stored :class:`~tunelab.evaluate.arena.store.Vote` as a judgment (the left answer was shown first)."""
    model_a, model_b = models or sorted((vote.model_left, vote.model_right))
    verdict = {"left": "first", "right": "second"}.get(vote.verdict, vote.verdict)
    return Judgment(vote.prompt_id, model_a, model_b, vote.model_left, verdict, judge, f"voter {vote.voter}")


JudgeFactory = Callable[[str, int], Judge]
JUDGES: Registry[JudgeFactory] = Registry("arena judge", key="--judge")
JUDGES.register("reward", lambda arg, batch_size: RewardJudge(arg))
JUDGES.register("llm", lambda arg, batch_size: LlmJudge(arg, batch_size=batch_size))
JUDGES.register("human", lambda arg, batch_size: HumanJudge(arg))


def open_judge(spec: str, *, batch_size: int = 8) -> Judge:
    """A judge from ``NAME:ARG`` (``reward:runs/rm``, ``llm:smollm2-135m-instruct``, ``human:votes.sqlite``)."""
    name, _, arg = spec.partition(":")
    factory = JUDGES.get(name)
    if not arg:
        raise ConfigError(
            f"--judge {spec}: {name} needs an argument after ':'\n"
            f"  fix: --judge reward:runs/RM, --judge llm:MODEL_OR_URL or --judge human:votes.sqlite"
        )
    return factory(arg, batch_size)


# --------------------------------------------------------------------------- from judgments to battles


@dataclass(frozen=True)
class JudgeReport:
    """How the judge behaved: position bias and how often it could decide."""

    judge: str
    judgments: int
    pairs: int
    pairs_both_orders: int
    position_consistency: float | None  # share of pairs (read in both orders) judged the same
    first_slot_win_rate: float | None  # share of decisive verdicts that picked the first answer
    tie_rate: float
    unparsed: int = 0

    def line(self) -> str:
        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{100 * x:.1f}%"

        text = (
            f"judge {self.judge}: {self.judgments} judgments of {self.pairs} pairs; position consistency "
            f"{pct(self.position_consistency)} ({self.pairs_both_orders} pairs with a verdict in both orders); "
            f"first-slot win rate {pct(self.first_slot_win_rate)}; ties {pct(self.tie_rate)}"
        )
        return text + (f"; {self.unparsed} unreadable replies counted as ties" if self.unparsed else "")


def _pair_key(j: Judgment) -> tuple[str, str, str]:
    return j.prompt_id, j.model_a, j.model_b


def _majority(outcomes: list[str]) -> str:
    """The most common outcome; a tie when two outcomes are equally common."""
    top = Counter(outcomes).most_common(2)
    return "tie" if len(top) == 2 and top[0][1] == top[1][1] else top[0][0]


def judge_report(judge: str, judgments: Sequence[Judgment]) -> JudgeReport:
    """Position consistency over the pairs with a readable verdict in both orders; first-slot rate, ties."""
    by_pair: dict[tuple, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for j in judgments:
        orders = by_pair[_pair_key(j)]
        if j.parsed:
            orders[j.first].append(j.outcome)
    both = [orders for orders in by_pair.values() if len(orders) == 2]
    same = sum(len({_majority(o) for o in orders.values()}) == 1 for orders in both)
    decisive = [j for j in judgments if j.verdict in ("first", "second")]
    return JudgeReport(
        judge=judge,
        judgments=len(judgments),
        pairs=len(by_pair),
        pairs_both_orders=len(both),
        position_consistency=same / len(both) if both else None,
        first_slot_win_rate=sum(j.verdict == "first" for j in decisive) / len(decisive) if decisive else None,
        tie_rate=1 - len(decisive) / len(judgments) if judgments else 0.0,
        unparsed=sum(not j.parsed for j in judgments),
    )


def battles_from(judgments: Sequence[Judgment], per_vote: bool) -> list[Battle]:
    """Battles for the ratings: one per judgment (votes), or one per pair (both orders must agree)."""
    if per_vote:
        return [Battle(j.model_a, j.model_b, j.outcome) for j in judgments]
    by_pair: dict[tuple, list[str]] = defaultdict(list)
    for j in judgments:
        by_pair[_pair_key(j)].append(j.outcome)
    return [Battle(a, b, outcomes[0] if len(set(outcomes)) == 1 else "tie") for (_, a, b), outcomes in by_pair.items()]
