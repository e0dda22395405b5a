"""Turn next-token logits into a token: repetition penalty, temperature, top-k, top-p, sampling.

The order and the exact rules follow transformers' logits processors (checked against them in
``tests/infer/test_sampling.py``), so a prompt sampled by tunelab and by ``generate`` sees the
same distribution:

* repetition penalty (Keskar et al. 2019, CTRL): a logit of a token already in the context is
  divided by the penalty when positive and multiplied by it when negative;
* temperature: logits / T;
* top-k: keep the k largest logits (ties with the k-th kept);
* top-p (Holtzman et al. 2020, nucleus sampling): keep the smallest set of most likely tokens
  whose probability reaches p (the most likely token is always kept).

Speculative decoding needs the processed *distribution* of both models, not just a sample, so
:func:`next_token_probs` is public.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tunelab.infer.types import SamplingParams


def apply_repetition_penalty(logits: Tensor, context: Sequence[int], penalty: float) -> Tensor:
    """CTRL repetition penalty on a ``(V,)`` logit vector; returns a new tensor."""
    if penalty == 1.0 or not context:
        return logits
    ids = torch.tensor(sorted(set(context)), dtype=torch.long, device=logits.device)
    picked = logits[ids]
    out = logits.clone()
    out[ids] = torch.where(picked < 0, picked * penalty, picked / penalty)
    return out


def _top_k(logits: Tensor, k: int) -> Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


def _top_p(logits: Tensor, p: float) -> Tensor:
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[-1] = False  # always keep the most likely token
    remove = remove_sorted.scatter(0, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def process_logits(logits: Tensor, params: SamplingParams, context: Sequence[int]) -> Tensor:
    """Penalty → temperature → top-k → top-p on ``(V,)`` float logits (masked entries are -inf)."""
    logits = apply_repetition_penalty(logits.float(), context, params.repetition_penalty)
    if params.greedy:
        return logits
    logits = logits / params.temperature
    return _top_p(_top_k(logits, params.top_k), params.top_p)


def next_token_probs(logits: Tensor, params: SamplingParams, context: Sequence[int]) -> Tensor:
    """The distribution the next token is drawn from, ``(V,)``; one-hot on the argmax when greedy."""
    processed = process_logits(logits, params, context)
    if params.greedy:
        probs = torch.zeros_like(processed)
        probs[int(processed.argmax())] = 1.0
        return probs
    return processed.softmax(dim=-1)


def pick_token(
    logits: Tensor, params: SamplingParams, context: Sequence[int], generator: torch.Generator | None
) -> int:
    """Choose the next token from ``(V,)`` logits: argmax when greedy, else a seeded draw."""
    processed = process_logits(logits, params, context)
    if params.greedy:
        return int(processed.argmax())
    return int(torch.multinomial(processed.softmax(dim=-1), 1, generator=generator))


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A private RNG per request: a seed makes that request reproducible whatever runs beside it."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
