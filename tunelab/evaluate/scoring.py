"""Batched log-likelihood scoring: the core of ``tunelab eval perplexity`` and the harness bridge.

A :class:`ScoreRow` is a token sequence and the positions to score; :func:`score_rows` returns,
for each row, the summed ``log p(ids[t] | ids[:t])`` over those positions, how many there were
and whether each scored token was the argmax (lm-evaluation-harness's ``is_greedy``).

How: rows are sorted longest first (so a batch pads little and a memory error shows on the
first batch), right-padded and run as ``ids[:-1]`` without an attention mask, exactly as
lm-eval's ``hf`` backend does (causal attention never looks right, so right padding cannot
change a real position's logits). Only the scored positions' logits get a float32
log-softmax, so memory is ``B x T x hidden`` plus ``scored x V``, not ``B x T x V`` in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class ScoreRow:
    """``ids`` (T,) and the positions ``t >= 1`` whose token is scored given ``ids[:t]``."""

    ids: tuple[int, ...]
    scored: tuple[int, ...]


@dataclass(frozen=True)
class Score:
    """Summed log-probability of a row's scored tokens, their count, and whether all were the argmax."""

    logprob: float
    tokens: int
    greedy: bool


@dataclass
class ScoringModel:
    """A loaded causal LM for scoring and generation (the harness bridge, perplexity)."""

    model: object
    tokenizer: object
    name: str
    dtype: str


def load_scoring_model(spec: str, *, dtype: str = "auto", device: str = "auto") -> ScoringModel:
    """Load ``spec`` (a model name, folder, ``.gguf`` file or run folder with its adapter).

    ``dtype="auto"`` is the dtype the precision probe measured fastest here
    (:func:`tunelab.models.load.dtype_name`); pass ``fp32`` for comparisons to 1e-4.
    A run folder brings its own tokenizer and chat template (:func:`tunelab.models.load.load_run`).
    """
    from tunelab.config import ModelArgs
    from tunelab.infer.load import is_run_folder
    from tunelab.models.load import default_device, dtype_name, load_model, load_run

    device = default_device(device)
    if is_run_folder(spec):
        loaded = load_run(spec, device=device, dtype=dtype)
        model, tokenizer, name = loaded.model, loaded.tokenizer, Path(spec).resolve().name
    else:
        model, tokenizer = load_model(ModelArgs(name=str(spec), dtype=dtype), device=device)
        name = Path(spec).name if Path(spec).exists() else str(spec)
    model.eval()
    return ScoringModel(model, tokenizer, name, dtype_name(dtype, device))


def _batches(order: Sequence[int], rows: Sequence[ScoreRow], batch_size: int, max_tokens: int | None):
    """Consecutive runs of ``order`` of at most ``batch_size`` rows (and ``max_tokens`` padded tokens)."""
    batch: list[int] = []
    for i in order:
        width = len(rows[batch[0]].ids) if batch else len(rows[i].ids)
        if batch and (len(batch) == batch_size or (max_tokens and (len(batch) + 1) * width > max_tokens)):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


@torch.inference_mode()
def score_rows(
    model, rows: Sequence[ScoreRow], *, batch_size: int = 8, pad_id: int = 0, max_tokens: int | None = None
) -> list[Score]:
    """Score every row (see the module docstring); results in the order of ``rows``.

    Args:
        model: a causal LM (a peft model too: prompt-tuning's virtual positions are dropped).
        rows: sequences with the positions to score (each ``1 <= t < len(ids)``).
        batch_size: rows per forward pass.
        pad_id: right-padding id (never attended to by a real position).
        max_tokens: also cap a batch at this many padded tokens (long rows go fewer at a time).
    """
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i].ids), rows[i].ids))
    out: list[Score | None] = [None] * len(rows)
    for batch in _batches(order, rows, batch_size, max_tokens):
        width = len(rows[batch[0]].ids) - 1
        inp = torch.full((len(batch), width), pad_id, dtype=torch.long, device=device)
        for b, i in enumerate(batch):
            inp[b, : len(rows[i].ids) - 1] = torch.tensor(rows[i].ids[:-1], device=device)
        hidden = model(input_ids=inp, use_cache=False).logits[:, -width:]  # (B, T-1, V); row t predicts ids[t+1]
        for b, i in enumerate(batch):
            row = rows[i]
            if not row.scored:
                out[i] = Score(0.0, 0, True)
                continue
            at = torch.tensor([t - 1 for t in row.scored], device=device)
            target = torch.tensor([row.ids[t] for t in row.scored], device=device)
            logits = hidden[b, at].float()  # (N, V)
            logp = torch.log_softmax(logits, dim=-1).gather(-1, target[:, None])[:, 0]
            greedy = bool((logits.argmax(-1) == target).all())
            out[i] = Score(float(logp.sum()), len(row.scored), greedy)
    return [s for s in out if s is not None]
