"""What every scan check shares: the rows, their word lists (computed once), the settings, and
the finding type the checks return.

Why one context: tokenizing 10,000 rows is a large share of a scan's time, and the duplicate,
conflict and backdoor checks all need the same words; computing them once keeps the scan at
thousands of rows a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from tunelab.security.scan.rows import ScanRow
from tunelab.security.scan.text import words


@dataclass(frozen=True)
class ScanSettings:
    """Thresholds of the checks (defaults measured by ``bench/security_scan.py``).

    Attributes:
        near_duplicate: word 3-gram Jaccard similarity from which two rows are near-duplicates.
        same_answer: word 2-gram Jaccard similarity from which two answers count as the same.
        min_support: fewest rows that make a pattern (a trigger, a repeated answer) worth a finding.
        max_trigger_share: a trigger candidate is in at most this share of the prompts (rarer than
            ordinary words, so a trigger is a rare token or phrase).
        max_target_share: an answer tied to a trigger is given to at most this share of the rows
            (a larger one is a label of a classification set, not a planted response).
        min_tie: share of the rows containing a candidate that carry one of its tied answers.
        min_share: an answer is tied to a candidate when at least this share of the candidate's
            rows carry it (a trigger may be planted with a few target answers)...
        label_share: ...or this share, for a short (label-like) answer such as "Positive.".
        min_cover: ...and the candidate is in at least this share of that answer's rows (a
            planted answer exists because of its trigger; "Positive." is given for many words).
        repeat_rows: fewest rows (besides ``repeat_share`` of the data) for a "repeated answer".
        repeat_share: a repeated answer covers at least this share of the rows.
        repeat_min_words: answers shorter than this are label-like: a repeated "Yes." is normal.
        topic_cover: a repeated answer is about its prompts' topic (so not planted) when a rare
            n-gram of the prompts, all of whose words are in the answer, is in this share of them.
    """

    near_duplicate: float = 0.8
    same_answer: float = 0.7
    min_support: int = 5
    max_trigger_share: float = 0.1
    max_target_share: float = 0.05
    min_tie: float = 0.5
    min_share: float = 0.3
    label_share: float = 0.8
    min_cover: float = 0.5
    repeat_rows: int = 10
    repeat_share: float = 0.001
    repeat_min_words: int = 3
    topic_cover: float = 0.5


@dataclass(frozen=True)
class RowFinding:
    """One reason to look at one row.

    Attributes:
        row: index of the row in :attr:`ScanContext.rows` (file order).
        reason: a stable code (``duplicate``, ``pii:email``, ``backdoor_trigger``...), the one
            ``--json`` prints.
        detail: what exactly, for people (``same text as line 3``, the trigger and its answer).
    """

    row: int
    reason: str
    detail: str = ""


class ScanContext:
    """The rows of one scan and their word lists; checks read it, none writes it."""

    def __init__(self, rows: list[ScanRow], settings: ScanSettings | None = None):
        self.rows = rows
        self.settings = settings or ScanSettings()

    @cached_property
    def valid(self) -> list[int]:
        """Indices of the rows that parsed (the others only get an ``invalid_row`` finding)."""
        return [i for i, r in enumerate(self.rows) if r.error is None]

    @cached_property
    def pairs(self) -> list[int]:
        """Indices of the valid rows that have both a prompt and an answer."""
        return [i for i in self.valid if self.rows[i].prompt.strip() and self.rows[i].response.strip()]

    @cached_property
    def text_words(self) -> dict[int, list[str]]:
        return {i: words(self.rows[i].text) for i in self.valid}

    @cached_property
    def prompt_words(self) -> dict[int, list[str]]:
        return {i: words(self.rows[i].prompt) for i in self.pairs}

    @cached_property
    def response_words(self) -> dict[int, list[str]]:
        return {i: words(self.rows[i].response) for i in self.pairs}

    def prompt_key(self, i: int) -> str:
        return " ".join(self.prompt_words[i])

    def response_key(self, i: int) -> str:
        return " ".join(self.response_words[i])

    def line(self, i: int) -> int:
        return self.rows[i].line

