"""``inspect_data``: what a dataset looks like to the model before any training.

Gives the detected format, token-length statistics and histogram, how many examples
``max_length`` would cut, and one example rendered with its trained tokens marked, so a wrong
template or column mapping shows up before any compute is spent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.data.formats import read_examples
from tunelab.data.prepare import tokenize_all
from tunelab.data.templates import get_template
from tunelab.data.types import IGNORE_INDEX, LengthStats, Reject, TokenizedExample

#: Markers around trained tokens in a rendered example. The trained/prompt split is the point of
#: the example, so it must survive NO_COLOR, a pipe and a copy-paste: never colour alone.
TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"


@dataclass
class HistogramBin:
    low: int
    high: int
    count: int


@dataclass
class Inspection:
    """Result of :func:`inspect_data` (printed by ``tunelab data inspect``)."""

    format: str
    template: str
    rows_read: int
    examples: int
    rejected: int
    max_length: int
    lengths: LengthStats
    histogram: list[HistogramBin]
    truncated: int
    sample_where: str
    sample_spans: list[tuple[str, bool]] = field(default_factory=list)  # (text, trained)
    sample_trained_tokens: int = 0
    sample_tokens: int = 0


def histogram(lengths: list[int], bins: int = 10) -> list[HistogramBin]:
    """Equal-width bins from min to max (inclusive edges: ``low <= x <= high``, disjoint integers)."""
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    width = max(1, -(-(hi - lo + 1) // bins))  # ceil so every integer length has one bin
    edges = list(range(lo, hi + 1, width))
    counts = [0] * len(edges)
    for x in lengths:
        counts[(x - lo) // width] += 1
    return [HistogramBin(e, min(e + width - 1, hi), c) for e, c in zip(edges, counts, strict=True)]


def marked_spans(tokenized: TokenizedExample, tokenizer: Any) -> list[tuple[str, bool]]:
    """Runs of consecutive tokens with the same trained flag, decoded (what the labels say)."""
    spans: list[tuple[str, bool]] = []
    run: list[int] = []
    flag = None
    for tok, label in zip(tokenized.input_ids, tokenized.labels, strict=True):
        trained = label != IGNORE_INDEX
        if flag is not None and trained != flag:
            spans.append((tokenizer.decode(run), flag))
            run = []
        run.append(tok)
        flag = trained
    if run:
        spans.append((tokenizer.decode(run), bool(flag)))
    return spans


def inspect_data(
    path: str | Path,
    tokenizer: Any,
    template: str = "chat",
    format: str = "auto",
    max_length: int = 512,
    columns: dict[str, str] | None = None,
    system_prompt: str | None = None,
    skip_invalid: bool = False,
    sample: int = 0,
) -> Inspection:
    """Read and tokenize a dataset (no truncation) and summarize it.

    Args:
        sample: index of the example to render with its trained tokens marked.
    """
    tpl = get_template(template, tokenizer)
    read = read_examples(path, format, columns, skip_invalid)
    rejects: list[Reject] = list(read.rejects)
    toks = tokenize_all(read.examples, tokenizer, tpl, rejects, max_length=None, system_prompt=system_prompt,
                        skip_invalid=skip_invalid)
    lengths = [t.full_length for t in toks]
    chosen = toks[min(max(sample, 0), len(toks) - 1)] if toks else None
    shown = None
    if chosen is not None:
        shown = TokenizedExample(chosen.input_ids[:max_length], chosen.labels[:max_length], chosen.full_length,
                                 chosen.source, chosen.line)
    return Inspection(
        format=read.format, template=getattr(tpl, "name", template), rows_read=read.rows_read, examples=len(toks),
        rejected=len(rejects), max_length=max_length, lengths=LengthStats.of(lengths), histogram=histogram(lengths),
        truncated=sum(n > max_length for n in lengths),
        sample_where=f"{chosen.source}:{chosen.line}" if chosen else "",
        sample_spans=marked_spans(shown, tokenizer) if shown else [],
        sample_trained_tokens=shown.trained_tokens if shown else 0, sample_tokens=len(shown.input_ids) if shown else 0,
    )
