"""Exact and near-duplicate rows, and the same prompt given conflicting answers.

Why they matter for security as well as quality: a duplicated row is trained on more than once,
so repeating a row is the cheapest way to make a model memorize it (a poisoner's amplifier, and
the reason a duplicated secret leaks); a prompt answered two different ways teaches the model
both, which is how a label-flipping attack looks in an instruction set.

The earliest copy of a duplicate is kept clean; the later ones are flagged. For a conflict every
row of the prompt is flagged, since the scan cannot tell which answer is the right one.
"""

from __future__ import annotations

from collections.abc import Iterator

from tunelab.security.scan import minhash
from tunelab.security.scan.context import RowFinding, ScanContext
from tunelab.security.scan.text import jaccard, shingles

NEAR_SHINGLE = 3  # word 3-grams: robust to a changed word, yet two unrelated rows rarely share many
ANSWER_SHINGLE = 2  # answers are short; 2-grams still compare one-sentence answers


def duplicates(ctx: ScanContext) -> Iterator[RowFinding]:
    """``duplicate`` (same normalized text as an earlier row) and ``near_duplicate`` (word 3-gram
    Jaccard ≥ ``settings.near_duplicate`` with an earlier row)."""
    first: dict[str, int] = {}
    unique: list[int] = []
    for i in ctx.valid:
        j = first.setdefault(" ".join(ctx.text_words[i]), i)
        if j == i:
            unique.append(i)
        else:
            yield RowFinding(i, "duplicate", f"same text as line {ctx.line(j)}")
    sets = [shingles(ctx.text_words[i], NEAR_SHINGLE) for i in unique]
    for pos, rep in enumerate(minhash.groups(sets, ctx.settings.near_duplicate)):
        if rep != pos:
            similarity = jaccard(sets[pos], sets[rep])
            yield RowFinding(unique[pos], "near_duplicate",
                             f"{similarity:.0%} the same as line {ctx.line(unique[rep])}")


def conflicting_answers(ctx: ScanContext) -> Iterator[RowFinding]:
    """``conflicting_answer``: rows whose normalized prompts are equal but whose answers differ
    (word 2-gram Jaccard below ``settings.same_answer``)."""
    by_prompt: dict[str, list[int]] = {}
    for i in ctx.pairs:
        by_prompt.setdefault(ctx.prompt_key(i), []).append(i)
    for rows in by_prompt.values():
        if len(rows) < 2:
            continue
        answers = {i: shingles(ctx.response_words[i], ANSWER_SHINGLE) for i in rows}
        reps: list[int] = []  # one row per distinct answer (greedy: k rows x distinct answers, not k^2)
        for i in rows:
            if all(jaccard(answers[i], answers[r]) < ctx.settings.same_answer for r in reps):
                reps.append(i)
        if len(reps) < 2:
            continue
        for i in rows:
            peer = next((r for r in reps if jaccard(answers[i], answers[r]) < ctx.settings.same_answer), None)
            if peer is not None:  # None: close to every distinct answer (similarity is not transitive)
                yield RowFinding(i, "conflicting_answer", f"same prompt as line {ctx.line(peer)}, different answer")
