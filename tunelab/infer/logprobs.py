"""Log-probabilities of given tokens under the model (completions ``echo`` + ``logprobs``).

This is what lm-evaluation-harness needs to score a model through an OpenAI-compatible
server: it sends ``prompt = context + continuation`` with ``echo=True, max_tokens=0,
logprobs=1`` and sums the continuation's ``token_logprobs`` (and checks ``top_logprobs`` to
tell whether the continuation is the greedy one). Values are the model's raw distribution
(no temperature or penalty), computed in one forward pass with float32 log-softmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tunelab.infer.types import TokenLogprob


@torch.inference_mode()
def token_logprobs(model, tokenizer, ids: Sequence[int], top: int = 0) -> list[TokenLogprob]:
    """``log p(ids[i] | ids[:i])`` for every position (``None`` for the first token).

    Args:
        model: a causal LM.
        tokenizer: to turn ids into token strings.
        ids: the full token sequence, shape ``(T,)``.
        top: also return the ``top`` most likely tokens at each position (OpenAI ``logprobs=N``).
    """
    ids = list(ids)
    device = next(model.parameters()).device
    # peft's forward of a prompt-tuning adapter returns logits for its virtual tokens first: keep the last T.
    logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, -len(ids):]
    return logprobs_from_logits(logits, ids, tokenizer, top)


def logprobs_from_logits(logits: Tensor, ids: Sequence[int], tokenizer, top: int = 0) -> list[TokenLogprob]:
    """Per-token log-probs of ``ids`` from teacher-forced ``logits`` ``(T, V)`` (row i predicts ``ids[i + 1]``).

    Shared by every engine (tunelab's forward pass, llama.cpp's logits), so the numbers and the
    token strings are computed one way.
    """
    ids = list(ids)
    logp = torch.log_softmax(logits[:-1].float(), dim=-1)  # (T-1, V): row i predicts ids[i + 1]
    target = torch.tensor(ids[1:], device=logp.device)
    chosen = logp.gather(-1, target[:, None])[:, 0].tolist() if len(ids) > 1 else []
    tops: list[tuple[tuple[str, float], ...]] = [()]
    if top > 0 and len(ids) > 1:
        values, indices = logp.topk(min(top, logp.shape[-1]), dim=-1)
        for vals, idx in zip(values.tolist(), indices.tolist(), strict=True):
            tops.append(tuple(zip(token_pieces(tokenizer, idx), vals, strict=True)))
    else:
        tops.extend(() for _ in chosen)
    pieces = token_pieces(tokenizer, ids)
    values_per_token = [None, *chosen]
    return [
        TokenLogprob(token_id=t, token=p, logprob=v, top=tp)
        for t, p, v, tp in zip(ids, pieces, values_per_token, tops, strict=True)
    ]


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text of each token on its own (byte-level pieces decoded one by one)."""
    return [tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]
