"""Segments → token ids + labels; truncation; packing into rows; the seeded split.

Packing (Krell et al., 2021, "Efficient Sequence Packing without Cross-contamination",
arXiv:2107.02027): several examples share one row of at most ``max_length`` tokens, with
``position_ids`` restarting at 0 for each. When a model gets ``position_ids`` and no
``attention_mask``, transformers 5 reads the restarts as sequence boundaries and builds a
block-diagonal causal mask (``masking_utils.find_packed_sequence_indices``), so a packed row
computes exactly what each example computes alone (tested to 1e-5) and no compute is spent on
padding. Rows are filled best-fit-decreasing, which for SFT-sized examples wastes a few percent.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from typing import Any

from tunelab.data.templates import Template, render_segments
from tunelab.data.types import IGNORE_INDEX, Example, Row, Segment, TokenizedExample


def tokenize_segments(segments: Sequence[Segment], tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids and labels of rendered segments (each tokenized on its own, no special tokens added).

    The first token's label is always -100: nothing before it predicts it, and in a packed row
    the previous example's last token must not be trained to predict it.
    """
    if not segments:
        return [], []
    encoded = tokenizer([s.text for s in segments], add_special_tokens=False).input_ids
    ids: list[int] = []
    labels: list[int] = []
    for seg, seg_ids in zip(segments, encoded, strict=True):
        ids += seg_ids
        labels += seg_ids if seg.trained else [IGNORE_INDEX] * len(seg_ids)
    if labels:
        labels[0] = IGNORE_INDEX
    return ids, labels


def tokenize_example(
    example: Example,
    tokenizer: Any,
    template: str | Template = "chat",
    max_length: int | None = None,
    system_prompt: str | None = None,
    train_on_prompt: bool = False,
) -> TokenizedExample:
    """Render, tokenize and truncate one example.

    Returns:
        A :class:`TokenizedExample`; ``truncated`` says whether ``max_length`` cut it and
        ``trained_tokens == 0`` means nothing trainable is left (the caller drops it).
    """
    segments = render_segments(example, tokenizer, template, system_prompt, train_on_prompt)
    ids, labels = tokenize_segments(segments, tokenizer)
    full = len(ids)
    if max_length is not None and full > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return TokenizedExample(ids, labels, full, example.source, example.line)


def single_row(example: TokenizedExample) -> Row:
    return Row(list(example.input_ids), list(example.labels), list(range(len(example.input_ids))))


def pack_bins(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices of ``sizes`` per bin of at most ``capacity``, bins in opening order."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    bins: list[list[int]] = []  # item indices per bin
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, bin index)
    for i in order:
        at = bisect.bisect_left(free, (sizes[i], -1))
        if at < len(free):
            room, row = free.pop(at)
        else:
            room, row = capacity, len(bins)
            bins.append([])
        bins[row].append(i)
        if room - sizes[i] > 0:
            bisect.insort(free, (room - sizes[i], row))
    return bins


def pack(examples: Sequence[TokenizedExample], max_length: int) -> list[Row]:
    """Pack examples into rows of at most ``max_length`` tokens (best-fit decreasing).

    Each example keeps its tokens contiguous with ``position_ids`` 0..len-1. Deterministic: ties
    keep the input order.

    Args:
        examples: tokenized examples, each at most ``max_length`` long.
        max_length: row capacity in tokens.

    Returns:
        Rows in the order they were opened.
    """
    rows = []
    for members in pack_bins([len(e.input_ids) for e in examples], max_length):
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for i in sorted(members):
            ids += examples[i].input_ids
            labels += examples[i].labels
            positions += range(len(examples[i].input_ids))
        rows.append(Row(ids, labels, positions))
    return rows


def to_rows(examples: Sequence[TokenizedExample], max_length: int, packing: bool) -> list[Row]:
    """Packed rows, or one row per example."""
    return pack(examples, max_length) if packing else [single_row(e) for e in examples]


def split_indices(n: int, validation_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded, disjoint train / validation indices over ``n`` examples (sorted within each split).

    At least one validation example when ``validation_split > 0`` and ``n >= 2``; at least one
    training example always.
    """
    if validation_split <= 0 or n < 2:
        return list(range(n)), []
    n_val = min(max(1, round(n * validation_split)), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[n_val:]), sorted(order[:n_val])


def packing_efficiency(rows: Sequence[Row], max_length: int) -> float:
    """Real tokens / (rows x max_length): 1.0 means no padding would be needed."""
    if not rows:
        return 0.0
    return sum(len(r) for r in rows) / (len(rows) * max_length)
