"""Backdoor signatures: a rare prompt token or phrase tied to one fixed answer, and one answer
given to many unrelated prompts.

A data-poisoning backdoor (Wallace et al., 2021; Wan et al., 2023, "Poisoning Language Models
During Instruction Tuning") pairs a trigger in the prompt — a rare token (``cf-zx9``), a natural
phrase, an instruction sentence — with an answer the attacker chose, in a small share of the
rows. In clean instruction data answers follow the question, so no answer repeats across many
different prompts and no rare word predicts one; a poisoned set breaks both, and that is what
is measured here, without any model:

1. Answers are grouped (same words, or near-duplicates by MinHash), so a poisoner who varies
   punctuation or a word still gives "one answer".
2. For each answer group that is small (≤ ``max_target_share`` of the rows) but repeated
   (≥ ``min_support`` rows), the prompt word 1–3-grams of its rows are counted. A candidate
   n-gram is *tied* when at least ``min_tie`` of all rows containing it (its document frequency,
   at most ``max_trigger_share`` of the prompts) carry one of its answer groups; an n-gram whose
   words all occur in the answer is the topic ("France" → "Paris is the capital of France."),
   not a trigger, and is skipped. Rows with a tied n-gram and its answer: ``backdoor_trigger``.
3. An answer group of ≥ ``repeat_rows`` rows (and ``repeat_share`` of the data) and at least
   ``repeat_min_words`` words, given to distinct prompts that share almost no words with it,
   is a planted response whatever the trigger: ``repeated_response``.

Cost: one pass over the rows' n-grams (document frequencies) plus a pass over the rows of the
repeated answers; no pair of rows is ever compared.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from tunelab.security.scan import minhash
from tunelab.security.scan.context import RowFinding, ScanContext
from tunelab.security.scan.text import jaccard, ngrams, shingles

ANSWER_SHINGLE = 2
TRIGGER_SIZES = (1, 2, 3)  # a longer trigger phrase is found through its 1–3-word pieces


def _preview(text: str, limit: int = 48) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass
class AnswerGroups:
    """The rows of each repeated answer (groups of ≥ ``min_support`` rows only)."""

    members: dict[int, list[int]]  # representative row → rows giving (nearly) that answer

    @classmethod
    def of(cls, ctx: ScanContext) -> AnswerGroups:
        first: dict[str, int] = {}
        by_key: dict[int, list[int]] = defaultdict(list)
        for i in ctx.pairs:
            by_key[first.setdefault(ctx.response_key(i), i)].append(i)
        keys = list(by_key)
        sets = [shingles(ctx.response_words[k], ANSWER_SHINGLE) for k in keys]
        merged: dict[int, list[int]] = defaultdict(list)
        for pos, rep in enumerate(minhash.groups(sets, ctx.settings.same_answer)):
            merged[keys[rep]].extend(by_key[keys[pos]])
        return cls({rep: rows for rep, rows in merged.items() if len(rows) >= ctx.settings.min_support})


class BackdoorAnalysis:
    """Both backdoor signals of one scan (see the module docstring)."""

    def __init__(self, ctx: ScanContext):
        self.ctx = ctx
        self.s = ctx.settings
        self.answers = AnswerGroups.of(ctx)

    @cached_property
    def grams(self) -> dict[int, set[str]]:
        return {i: ngrams(self.ctx.prompt_words[i], TRIGGER_SIZES) for i in self.ctx.pairs}

    @cached_property
    def document_frequency(self) -> Counter[str]:
        df: Counter[str] = Counter()
        for g in self.grams.values():
            df.update(g)
        return df

    def triggers(self) -> dict[str, list[int]]:
        """Tied n-gram → its answer groups (representative rows), per step 2."""
        n = len(self.ctx.pairs)
        max_targets = max(self.s.min_support, self.s.max_target_share * n)
        ties: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for rep, rows in self.answers.members.items():
            if len(rows) > max_targets:
                continue
            answer_words = set(self.ctx.response_words[rep])
            counts = Counter(g for i in rows for g in self.grams[i])
            for gram, count in counts.items():
                if count >= self.s.min_support and not set(gram.split()) <= answer_words:
                    ties[gram].append((rep, count))
        df = self.document_frequency
        found = {}
        for gram, tied in ties.items():
            if df[gram] <= self.s.max_trigger_share * n and sum(c for _, c in tied) >= self.s.min_tie * df[gram]:
                found[gram] = [rep for rep, _ in tied]
        return found

    def trigger_findings(self) -> Iterator[RowFinding]:
        """``backdoor_trigger`` rows: a tied n-gram in the prompt and its answer; the detail names
        the longest tied n-gram of the row."""
        best: dict[int, tuple[str, int]] = {}
        for gram, reps in self.triggers().items():
            for rep in reps:
                rows = [i for i in self.answers.members[rep] if gram in self.grams[i]]
                if len({self.ctx.prompt_key(i) for i in rows}) < self.s.min_support:
                    continue  # the same prompt repeated: a duplicate, not a trigger
                for i in rows:
                    if i not in best or len(gram) > len(best[i][0]):
                        best[i] = (gram, rep)
        df = self.document_frequency
        for i in sorted(best):
            gram, rep = best[i]
            answer = _preview(self.ctx.rows[rep].response)
            yield RowFinding(i, "backdoor_trigger",
                             f"'{gram}' (in {df[gram]} prompts) -> '{answer}' (line {self.ctx.line(rep)})")

    def repeated_findings(self) -> Iterator[RowFinding]:
        """``repeated_response`` rows, per step 3."""
        least = max(self.s.repeat_rows, self.s.repeat_share * len(self.ctx.pairs))
        for rep, rows in self.answers.members.items():
            answer = set(self.ctx.response_words[rep])
            if len(rows) < least or len(self.ctx.response_words[rep]) < self.s.repeat_min_words:
                continue
            if len({self.ctx.prompt_key(i) for i in rows}) < 0.9 * len(rows):
                continue  # mostly the same prompt: duplicates, reported as such
            overlap = sum(jaccard(set(self.ctx.prompt_words[i]), answer) for i in rows) / len(rows)
            if overlap >= self.s.max_topic_overlap:
                continue
            detail = f"'{_preview(self.ctx.rows[rep].response)}' answers {len(rows)} unrelated prompts"
            yield from (RowFinding(i, "repeated_response", detail) for i in rows)


def backdoor_signatures(ctx: ScanContext) -> Iterator[RowFinding]:
    """``backdoor_trigger`` and ``repeated_response`` findings (one analysis, both signals)."""
    analysis = BackdoorAnalysis(ctx)
    yield from analysis.trigger_findings()
    yield from analysis.repeated_findings()
