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
   (≥ ``min_support`` rows), the prompt word 1–3-grams of its rows are counted. An answer is
   *tied* to an n-gram when at least ``min_share`` of the rows containing the n-gram carry it
   (``label_share`` for a label-like answer of a word or two) and the n-gram is in at least
   ``min_cover`` of the answer's rows: a planted answer exists because of its trigger, while
   "Positive." follows many different words. An n-gram sharing a word with the answer is its
   topic or its input ("France" → "Paris is the capital of France."; a word list containing
   "kernel" → "The longest word is kernel."), not a trigger. An n-gram in at most
   ``max_trigger_share`` of the prompts whose tied answers cover ``min_tie`` of its rows is a
   trigger; rows with a trigger and one of its answers: ``backdoor_trigger``. A task whose
   answer depends on the rest of the prompt ("Count the words: ..." → "There are 5 words.")
   spreads over many answers, none holding ``min_share``, so it is not one.
3. An answer group of ≥ ``repeat_rows`` rows (and ``repeat_share`` of the data) and at least
   ``repeat_min_words`` words, given to distinct prompts that have no common topic (no n-gram
   made of answer words in ``topic_cover`` of them and 3x as common there as in all prompts:
   "There are 5 words." answers many "Count the words: ..." prompts), is a planted response
   whatever the trigger looks like: ``repeated_response``.

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
from tunelab.security.scan.text import ngrams, shingles

ANSWER_SHINGLE = 2
TRIGGER_SIZES = (1, 2, 3)  # a longer trigger phrase is found through its 1–3-word pieces
TOPIC_WORD = 4  # letters of the longest word of a topic n-gram (not "to", "a", "in")


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
    """Both backdoor signals of one scan (see the module docstring).

    Only the rows of repeated answers are split into n-grams; the document frequency of an
    n-gram is counted on demand from word posting lists (the rows of its rarest word, then a
    substring test), so the cost follows the few candidates, not every n-gram of every row.
    """

    def __init__(self, ctx: ScanContext):
        self.ctx = ctx
        self.s = ctx.settings
        self.answers = AnswerGroups.of(ctx)
        self.grams = {i: ngrams(ctx.prompt_words[i], TRIGGER_SIZES) for rows in self.answers.members.values()
                      for i in rows}
        self._df: dict[str, int] = {}

    @cached_property
    def postings(self) -> dict[str, list[int]]:
        """Prompt word → rows whose prompt contains it."""
        out: dict[str, list[int]] = defaultdict(list)
        for i in self.ctx.pairs:
            for w in set(self.ctx.prompt_words[i]):
                out[w].append(i)
        return out

    def df(self, gram: str) -> int:
        """How many prompts contain ``gram`` (consecutive words)."""
        if gram not in self._df:
            parts = gram.split(" ")
            rows = min((self.postings.get(w, []) for w in parts), key=len)
            needle = f" {gram} "
            self._df[gram] = len(rows) if len(parts) == 1 else sum(
                needle in f" {self.ctx.prompt_key(i)} " for i in rows)
        return self._df[gram]

    def _tied(self, gram: str, count: int, rows: list[int], answer_words: set[str], label: bool) -> bool:
        """Is the answer group (``rows``, ``count`` of them containing ``gram``) tied to ``gram``?

        An n-gram sharing a word with the answer is its topic or its input ("The longest word
        is kernel." for a list containing "kernel"), never a trigger.
        """
        if count < self.s.min_support or count < self.s.min_cover * len(rows):
            return False
        if any(w in answer_words for w in gram.split(" ")):
            return False
        return count >= (self.s.label_share if label else self.s.min_share) * self.df(gram)

    def triggers(self) -> dict[str, list[int]]:
        """Tied n-gram → its answer groups (representative rows), per step 2."""
        n = len(self.ctx.pairs)
        max_targets = max(self.s.min_support, self.s.max_target_share * n)
        ties: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for rep, rows in self.answers.members.items():
            if len(rows) > max_targets:
                continue
            answer_words = set(self.ctx.response_words[rep])
            label = len(self.ctx.response_words[rep]) < self.s.repeat_min_words
            counts = Counter(g for i in rows for g in self.grams[i])
            for gram, count in counts.items():
                if self._tied(gram, count, rows, answer_words, label):
                    ties[gram].append((rep, count))
        rare = self.s.max_trigger_share * n
        return {gram: [rep for rep, _ in tied] for gram, tied in ties.items()
                if self.df(gram) <= rare and sum(c for _, c in tied) >= self.s.min_tie * self.df(gram)}

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
        for i in sorted(best):
            gram, rep = best[i]
            answer = _preview(self.ctx.rows[rep].response)
            yield RowFinding(i, "backdoor_trigger",
                             f"'{gram}' (in {self.df(gram)} prompts) -> '{answer}' (line {self.ctx.line(rep)})")

    def _about_topic(self, rows: list[int], answer_words: set[str]) -> bool:
        """Do most prompts share an n-gram, made of answer words, that is enriched in them (≥ 3x
        its rate in all prompts)? Then the answer is about the prompts' topic. The n-gram needs a
        word of 4+ letters: a trigger phrase's "to" also appears in its target, by chance."""
        n = len(self.ctx.pairs)
        counts = Counter(g for i in rows for g in self.grams[i]
                         if set(g.split(" ")) <= answer_words and max(map(len, g.split(" "))) >= TOPIC_WORD)
        return any(c >= self.s.topic_cover * len(rows) and c / len(rows) >= 3 * self.df(g) / n
                   for g, c in counts.items())

    def repeated_findings(self) -> Iterator[RowFinding]:
        """``repeated_response`` rows, per step 3."""
        least = max(self.s.repeat_rows, self.s.repeat_share * len(self.ctx.pairs))
        for rep, rows in self.answers.members.items():
            if len(rows) < least or len(self.ctx.response_words[rep]) < self.s.repeat_min_words:
                continue
            if len({self.ctx.prompt_key(i) for i in rows}) < 0.9 * len(rows):
                continue  # mostly the same prompt: duplicates, reported as such
            if self._about_topic(rows, set(self.ctx.response_words[rep])):
                continue
            detail = f"'{_preview(self.ctx.rows[rep].response)}' answers {len(rows)} unrelated prompts"
            yield from (RowFinding(i, "repeated_response", detail) for i in rows)


def backdoor_signatures(ctx: ScanContext) -> Iterator[RowFinding]:
    """``backdoor_trigger`` and ``repeated_response`` findings (one analysis, both signals)."""
    analysis = BackdoorAnalysis(ctx)
    yield from analysis.trigger_findings()
    yield from analysis.repeated_findings()
