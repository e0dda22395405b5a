"""Speculative decoding: drafters that propose tokens and the rules that accept them.

A drafter proposes ``k`` tokens; the target model scores the pending token plus all drafts in
one forward pass, giving ``k + 1`` next-token distributions ``p_1..p_{k+1}``.

* Greedy (temperature 0): accept the longest prefix of drafts equal to the target's argmax at
  each position, then append the target's own token at the first disagreement (or after the
  last draft). The output is therefore exactly plain greedy decoding's, with fewer forwards.
* Sampling: the rejection rule of Leviathan et al. 2023 (arXiv:2211.17192, Alg. 1) and Chen
  et al. 2023 (arXiv:2302.01318): accept draft ``x ~ q`` with probability ``min(1, p(x)/q(x))``;
  at the first rejection draw from ``norm(max(0, p - q))``; if all are accepted draw a bonus
  token from ``p_{k+1}``. Every emitted token is then distributed exactly as ``p`` (tested
  empirically). Prompt lookup proposes deterministic drafts: ``q`` is one-hot.

Drafters (a registry, :data:`DRAFTERS`):

* ``draft``: a smaller model that shares the tokenizer, with its own :class:`KVState` that
  catches up on accepted tokens and drops rejected ones by itself.
* ``prompt_lookup`` (Saxena 2023, "Prompt Lookup Decoding"): find the most recent earlier
  occurrence of the last n-gram of the sequence and propose what followed it. Free, and very
  effective when the answer copies the prompt (extraction, editing, summaries with quotes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from tunelab.errors import ServeError
from tunelab.infer.cache import KVState
from tunelab.infer.sampling import next_token_probs, process_logits
from tunelab.infer.types import SamplingParams, Speculation


@dataclass
class Draft:
    """Proposed tokens and, for sampled drafts, the draft distributions ``q`` they came from."""

    tokens: list[int]
    probs: list[Tensor] | None = None  # k × (V,); None means deterministic (one-hot) drafts


class Drafter(Protocol):
    def propose(self, tokens: Sequence[int], k: int, params: SamplingParams, generator) -> Draft: ...


class ModelDrafter:
    """Drafts with a smaller causal LM that shares the target's tokenizer.

    A draft prepared by :func:`tunelab.infer.drafting.prepare_draft` runs on the lean decode state
    (:mod:`tunelab.infer.lean`, optionally int8), may score only part of the vocabulary
    (``model.draft_vocab`` maps its logits to token ids) and may stop early: with
    ``min_confidence`` > 0 it drafts no token its own probability puts below that (a dynamic draft
    length, as in Mamou et al., 2024, arXiv:2405.04304), since on a CPU a verify pass costs about
    the same for 2 or 8 tokens while each drafted token costs a draft step.
    """

    def __init__(self, model, use_cache: bool = True, min_confidence: float | None = None):
        from tunelab.infer.drafting import draft_state

        self.state = draft_state(model) if use_cache else KVState(model, use_cache=False)
        self.vocab: Tensor | None = getattr(model, "draft_vocab", None)
        self.full_vocab = model.get_input_embeddings().weight.shape[0]  # the target's (same tokenizer)
        runtime = getattr(model, "draft_runtime", None)
        default = runtime.min_confidence if runtime is not None else 0.0
        self.min_confidence = default if min_confidence is None else min_confidence

    def propose(self, tokens: Sequence[int], k: int, params: SamplingParams, generator) -> Draft:
        seq = list(tokens)
        drafted: list[int] = []
        probs: list[Tensor] = []
        for _ in range(k):
            logits = self.state.logits(seq)[-1]
            if params.greedy:  # no distribution needed: the argmax (and its probability if gated)
                if self.vocab is None:
                    logits = process_logits(logits, params, seq)  # the repetition penalty, as the target
                best = int(logits.argmax())
                if self.min_confidence > 0 and float(logits.softmax(-1)[best]) < self.min_confidence:
                    break
                token = best if self.vocab is None else int(self.vocab[best])
            else:
                if self.vocab is not None:  # q over the full vocabulary, zero outside the draft's head
                    logits = logits.new_full((self.full_vocab,), float("-inf")).index_copy(0, self.vocab, logits)
                q = next_token_probs(logits, params, seq)
                if self.min_confidence > 0 and float(q.max()) < self.min_confidence:
                    break
                token = int(torch.multinomial(q, 1, generator=generator))
                probs.append(q)
            drafted.append(token)
            seq.append(token)
        return Draft(drafted, None if params.greedy else probs)


def lookup_ngram(tokens: Sequence[int], k: int, max_ngram: int = 3, min_ngram: int = 1) -> list[int]:
    """Prompt-lookup draft: the (up to) ``k`` tokens that followed the most recent earlier
    occurrence of the longest matching suffix n-gram of ``tokens``; empty when none matches."""
    n_tokens = len(tokens)
    for n in range(min(max_ngram, n_tokens - 1), min_ngram - 1, -1):
        suffix = list(tokens[n_tokens - n :])
        for start in range(n_tokens - n - 1, -1, -1):
            if list(tokens[start : start + n]) == suffix:
                follow = list(tokens[start + n : start + n + k])
                if follow:
                    return follow
    return []


class PromptLookupDrafter:
    """Drafts by copying from the sequence itself (no model)."""

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1):
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram

    def propose(self, tokens: Sequence[int], k: int, params: SamplingParams, generator) -> Draft:
        return Draft(lookup_ngram(tokens, k, self.max_ngram, self.min_ngram))


def _make_draft(spec: Speculation, draft_model) -> Drafter:
    if draft_model is None:
        raise ServeError("speculation kind 'draft' needs a draft model.\n  fix: pass draft_model=... (same tokenizer)")
    return ModelDrafter(draft_model)


def _make_lookup(spec: Speculation, draft_model) -> Drafter:
    return PromptLookupDrafter(spec.max_ngram, spec.min_ngram)


DRAFTERS: dict[str, Callable[[Speculation, object], Drafter]] = {"draft": _make_draft, "prompt_lookup": _make_lookup}


def make_drafter(spec: Speculation, draft_model=None) -> Drafter | None:
    """The drafter for ``spec`` (None for plain decoding); an unknown kind lists the valid ones."""
    if spec.kind == "none":
        return None
    if spec.kind not in DRAFTERS:
        raise ServeError(f"unknown speculation kind '{spec.kind}'; valid: none, {', '.join(DRAFTERS)}")
    return DRAFTERS[spec.kind](spec, draft_model)


def verify(
    draft: Draft,
    target_probs: Sequence[Tensor],
    params: SamplingParams,
    generator: torch.Generator | None,
) -> tuple[list[int], int]:
    """Accept a prefix of ``draft`` against the target distributions ``p_1..p_{k+1}``.

    Returns:
        ``(tokens, accepted)``: the accepted drafts followed by one token drawn from the
        target (the correction at the first rejection, or the bonus after the last draft),
        and how many drafts were accepted.
    """
    out: list[int] = []
    for i, token in enumerate(draft.tokens):
        p = target_probs[i]
        if params.greedy:
            if int(p.argmax()) != token:
                return out + [int(p.argmax())], i
        else:
            q = draft.probs[i] if draft.probs is not None else _one_hot(p, token)
            ratio = (p[token] / q[token]).clamp(max=1.0) if q[token] > 0 else p.new_tensor(0.0)
            if float(torch.rand((), generator=generator, device=p.device)) >= float(ratio):
                residual = (p - q).clamp(min=0)
                total = residual.sum()
                residual = residual / total if total > 0 else p  # p == q: any draw from p is exact
                return out + [int(torch.multinomial(residual, 1, generator=generator))], i
        out.append(token)
    last = target_probs[len(draft.tokens)]
    bonus = int(last.argmax()) if params.greedy else int(torch.multinomial(last, 1, generator=generator))
    return out + [bonus], len(draft.tokens)


def _one_hot(like: Tensor, index: int) -> Tensor:
    q = torch.zeros_like(like)
    q[index] = 1.0
    return q
