"""Rows → right-padded tensors for a forward pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tunelab.data.types import IGNORE_INDEX, Row


def collate_rows(rows: Sequence[Row], pad_id: int | None) -> dict[str, torch.Tensor]:
    """Right-pad rows into a batch.

    The padding region's ``position_ids`` restart at 0, so with ``position_ids`` and no
    ``attention_mask`` it forms its own packed segment: real tokens never attend to padding,
    and padding has label -100. Callers pass either ``position_ids`` (packed or plain rows on
    normal models) or ``attention_mask`` (prompt-learning adapters), not both.

    Args:
        rows: token rows (input_ids, labels, position_ids lists).
        pad_id: the tokenizer's pad token id (0 if the tokenizer has none; never attended).

    Returns:
        ``input_ids`` (B, T) long, ``labels`` (B, T) long, ``position_ids`` (B, T) long,
        ``attention_mask`` (B, T) long: 1 on real tokens.
    """
    pad = 0 if pad_id is None else int(pad_id)
    width = max(len(r.input_ids) for r in rows)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad, dtype=torch.long)
    labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((batch, width), dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    for b, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[b, :n] = torch.tensor(row.input_ids, dtype=torch.long)
        labels[b, :n] = torch.tensor(row.labels, dtype=torch.long)
        position_ids[b, :n] = torch.tensor(row.position_ids, dtype=torch.long)
        position_ids[b, n:] = torch.arange(width - n)
        attention_mask[b, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "attention_mask": attention_mask}


def example_lengths(rows: Sequence[Row]) -> list[int]:
    """Token count of every example in ``rows``: a packed row holds one per restart of its
    ``position_ids`` at 0 (what the FLOP count of a step needs: attention is per example)."""
    out: list[int] = []
    for row in rows:
        starts = [i for i, p in enumerate(row.position_ids) if p == 0] or [0]
        ends = [*starts[1:], len(row.input_ids)]
        out += [end - start for start, end in zip(starts, ends, strict=True)]
    return out
