"""Typed records that flow through the data layer: raw rows → examples → segments → token rows.

Every record keeps where it came from (``source`` file and 1-based ``line``), so any later
problem (a reject, a truncated example, a surprising rendering) can be traced to the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
IGNORE_INDEX = -100  # label of tokens that are not trained (torch cross_entropy's ignore_index)


@dataclass
class RawRow:
    """One record as a reader found it, before its format is known.

    ``data`` is ``None`` when the record itself is unreadable (malformed JSON line, not an
    object); ``error`` then says why and ``raw`` keeps the text for the rejects file.
    """

    source: str
    line: int
    data: dict[str, Any] | None
    raw: str
    error: str | None = None


@dataclass
class Example:
    """One normalized training example: a conversation or a raw text.

    Attributes:
        messages: ``[{role, content}]`` with roles system/user/assistant (``None`` for text).
        text: raw text for continued pre-training (``None`` for conversations).
        source: file the row came from.
        line: 1-based line (jsonl, csv) or row index (json, parquet, HF folders).
        input: alpaca's optional ``input`` (context). The alpaca template shows it under
            ``### Input:``; every other template appends it to the first user message.
    """

    messages: list[Message] | None
    text: str | None
    source: str
    line: int
    input: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def conversation(self) -> list[Message]:
        """The messages with alpaca's ``input`` merged into the first user turn."""
        msgs = [dict(m) for m in self.messages or []]
        if self.input:
            for m in msgs:
                if m["role"] == "user":
                    m["content"] = f"{m['content']}\n\n{self.input}"
                    break
        return msgs


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text and whether its tokens are trained (labels) or masked (-100)."""

    text: str
    trained: bool


@dataclass
class Reject:
    """A row dropped by ``skip_invalid``: written to ``rejects.jsonl`` so nothing is lost silently."""

    file: str
    line: int
    error: str
    raw: str


@dataclass
class ReadResult:
    """What :func:`tunelab.data.read_examples` returns."""

    examples: list[Example]
    rejects: list[Reject]
    format: str
    rows_read: int = 0


@dataclass
class TokenizedExample:
    """One example as tokens.

    Attributes:
        input_ids: token ids after truncation.
        labels: ``input_ids`` where trained, -100 elsewhere (unshifted: the loss shifts).
        full_length: token count before truncation.
        source, line: where the example came from.
    """

    input_ids: list[int]
    labels: list[int]
    full_length: int
    source: str = ""
    line: int = 0

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass
class Row:
    """One training row (a single example, or several packed together).

    ``position_ids`` restart at 0 at the start of every packed example; transformers turns
    that into a block-diagonal causal mask when no ``attention_mask`` is passed.
    """

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class LengthStats:
    """Token-length statistics of a set of examples."""

    count: int = 0
    min: int = 0
    median: float = 0.0
    p95: float = 0.0
    max: int = 0
    mean: float = 0.0

    @classmethod
    def of(cls, lengths: list[int]) -> LengthStats:
        if not lengths:
            return cls()
        s = sorted(lengths)
        return cls(len(s), s[0], percentile(s, 50), percentile(s, 95), s[-1], sum(s) / len(s))


def percentile(sorted_values: list[int], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method) of already sorted values."""
    if not sorted_values:
        return 0.0
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


@dataclass
class DataReport:
    """What data preparation did, saved as ``data_report.json`` / ``report.json``.

    Attributes:
        format: detected or given row format.
        template: template name or Jinja path.
        files: input files (training, then validation).
        rows_read: records found in the files.
        rejected: invalid rows dropped (``skip_invalid``); see ``rejects_file``.
        truncated: examples longer than ``max_length`` (cut to fit).
        dropped: examples whose trained tokens were all cut by truncation (not used).
        lengths: token lengths of the examples before truncation.
        trained_tokens: tokens with a label, per split, after truncation.
        packing: whether examples were packed into rows.
        packing_efficiency: real tokens / (rows x max_length), per split.
        train_examples, validation_examples, train_rows, validation_rows: split sizes.
    """

    format: str = ""
    template: str = ""
    files: list[str] = field(default_factory=list)
    max_length: int = 0
    rows_read: int = 0
    rejected: int = 0
    rejects_file: str | None = None
    reject_samples: list[dict[str, Any]] = field(default_factory=list)
    truncated: int = 0
    dropped: int = 0
    lengths: LengthStats = field(default_factory=LengthStats)
    trained_tokens: dict[str, int] = field(default_factory=dict)
    total_tokens: dict[str, int] = field(default_factory=dict)
    packing: bool = False
    packing_efficiency: dict[str, float] = field(default_factory=dict)
    train_examples: int = 0
    validation_examples: int = 0
    train_rows: int = 0
    validation_rows: int = 0
    seed: int = 0
    validation_split: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataReport:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if isinstance(known.get("lengths"), dict):
            known["lengths"] = LengthStats(**known["lengths"])
        return cls(**known)


@dataclass
class PreparedData:
    """What :func:`tunelab.data.prepare` returns: token rows per split and the report."""

    train: list[Row]
    validation: list[Row]
    report: DataReport
    rejects: list[Reject] = field(default_factory=list)
