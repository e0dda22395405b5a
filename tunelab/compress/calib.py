"""Calibration and held-out data for pruning: token rows from any SFT data file, batches, perplexity.

Pruning needs two disjoint sets: calibration rows that score layers and channels (and train
the recovery run), and held-out rows that measure perplexity before pruning, after it and after
recovery. Both come from :func:`tunelab.data.prepare` with the same seeded split the training
loop uses, so the recovery run's validation set *is* the held-out set and its ``val_ppl``
matches the perplexity printed here. Rows are one example each (no packing): batches carry an
``attention_mask`` that marks the real tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tunelab.errors import DataError


def model_inputs(batch: Any) -> dict[str, Any]:
    """Model kwargs of a batch: a dict/BatchEncoding with ``input_ids`` (+ mask / positions) or a (B, T) tensor."""
    if not hasattr(batch, "keys"):  # a bare (B, T) id tensor
        return {"input_ids": batch}
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}


def token_mask(inputs: dict[str, Any]) -> Any:
    """(B, T) bool: the real (non-padding) tokens of ``inputs``."""
    import torch

    mask = inputs.get("attention_mask")
    return torch.ones_like(inputs["input_ids"], dtype=torch.bool) if mask is None else mask.bool()


def run_calibration(model: Any, calib_batches: Iterable[Any], handles: list[Any], state: dict[str, Any]) -> int:
    """Run every batch through ``model`` (eval mode, no grad) for the hooks in ``handles``; returns the real tokens.

    Before each forward, ``state["mask"]`` is the batch's (B, T) real-token mask, for hooks to
    leave padding out. The hooks are removed and the train/eval mode restored even on an error.
    """
    import torch

    count = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in calib_batches:
                inputs = {k: v.to(model.device) for k, v in model_inputs(batch).items()}
                state["mask"] = token_mask(inputs)
                count += int(state["mask"].sum())
                model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return count


@dataclass
class CalibrationSet:
    """Token rows (``tunelab.data.types.Row``) to score and recover on, and held-out rows to measure."""

    calibration: list[Any]
    held_out: list[Any]
    pad_id: int

    def batches(self, rows: Sequence[Any] | None = None, batch_size: int = 8) -> Iterator[dict[str, Any]]:
        """Right-padded batches (input_ids, attention_mask, position_ids, labels) of ``rows`` (default: calibration)."""
        from tunelab.data.collate import collate_rows

        rows = self.calibration if rows is None else rows
        for start in range(0, len(rows), batch_size):
            yield collate_rows(rows[start : start + batch_size], self.pad_id)


def load_calibration(data_args: Any, tokenizer: Any, max_rows: int | None = None) -> CalibrationSet:
    """Read, split and tokenize ``data_args.path`` (one example per row); keep at most ``max_rows`` calibration rows.

    Raises:
        DataError: the file cannot be read, or the split leaves no held-out example
            (``data.validation_split`` 0 without ``data.validation_path``).
    """
    from tunelab.data import prepare

    prepared = prepare(data_args, tokenizer, packing=False)
    if not prepared.validation:
        raise DataError(
            f"{data_args.path}: no held-out example to measure perplexity on.\n"
            "  fix: pass --validation-split 0.1 (or more) or a --held-out file"
        )
    calibration = list(prepared.train)[:max_rows] if max_rows else list(prepared.train)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return CalibrationSet(calibration, list(prepared.validation), int(pad))


def perplexity(model: Any, data: CalibrationSet, rows: Sequence[Any] | None = None, batch_size: int = 8) -> float:
    """``exp`` of the mean next-token NLL over the trained tokens of ``rows`` (default: the held-out rows).

    The same quantity as the training loop's ``val_ppl`` for SFT (labels -100 on prompts and padding).
    """
    import torch

    from tunelab.methods.sft import token_nll

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in data.batches(data.held_out if rows is None else rows, batch_size):
                logits = model(
                    input_ids=batch["input_ids"].to(model.device),
                    attention_mask=batch["attention_mask"].to(model.device),
                    use_cache=False,
                ).logits
                nll, n = token_nll(logits, batch["labels"].to(model.device))
                total += float(nll)
                count += int(n)
    finally:
        model.train(was_training)
    return math.exp(min(total / max(count, 1), 50.0))
