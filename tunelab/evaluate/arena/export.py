"""Human votes → preference pairs that ``method: dpo`` (and the other pairwise methods) train on.

Closing the loop of RLHF with people in it (Ouyang et al. 2022, arXiv:2203.02155): the votes of
the arena page become ``prompt`` / ``chosen`` / ``rejected`` rows, the format
:mod:`tunelab.data.preference` reads. Votes on the same prompt and the same two answers are
netted (3 votes for x and 1 for y give one row x > y; 2 against 2 give none), so a pair people
disagree on does not teach both directions at once. Ties and "both bad" carry no preference and
are left out, as are pairs whose two answers are the same text (the DPO reader refuses them).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tunelab.evaluate.arena.store import Vote

ExportFormat = str
FORMATS = ("preference",)


@dataclass(frozen=True)
class ExportSummary:
    votes: int
    rows: int
    ties: int  # tie / both_bad votes (no preference)
    netted_out: int  # pairs whose votes cancelled
    same_answer: int


def _prompt_value(vote: Vote) -> str | list[dict]:
    if vote.system:
        return [{"role": "system", "content": vote.system}, {"role": "user", "content": vote.prompt}]
    return vote.prompt


def preference_rows(votes: list[Vote]) -> tuple[list[dict], ExportSummary]:
    """One ``{prompt, chosen, rejected, votes, chosen_model, rejected_model}`` row per decided pair."""
    net: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    models: dict[tuple[tuple, str], str] = {}
    first_seen: dict[tuple, Vote] = {}
    ties = same = 0
    for v in votes:
        if v.answer_left.strip() == v.answer_right.strip():
            same += 1
            continue
        if v.verdict not in ("left", "right"):
            ties += 1
            continue
        key = (v.prompt, v.system, frozenset((v.answer_left, v.answer_right)))
        first_seen.setdefault(key, v)
        winner = v.answer_left if v.verdict == "left" else v.answer_right
        net[key][winner] += 1
        models[(key, v.answer_left)], models[(key, v.answer_right)] = v.model_left, v.model_right
    rows, cancelled = [], 0
    for key, tally in net.items():
        answers = sorted(key[2])
        wins = [tally.get(a, 0) for a in answers]
        if wins[0] == wins[1]:
            cancelled += 1
            continue
        chosen, rejected = (answers[0], answers[1]) if wins[0] > wins[1] else (answers[1], answers[0])
        rows.append(
            {
                "prompt": _prompt_value(first_seen[key]),
                "chosen": chosen,
                "rejected": rejected,
                "votes": abs(wins[0] - wins[1]),
                "chosen_model": models[(key, chosen)],
                "rejected_model": models[(key, rejected)],
            }
        )
    return rows, ExportSummary(len(votes), len(rows), ties, cancelled, same)


def write_jsonl(rows: list[dict], out: str | Path) -> None:
    """Write ``rows`` as JSON lines, atomically (a temporary file renamed over ``out``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(out)
