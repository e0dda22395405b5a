"""Logit processing: hand-computed values and equivalence with transformers' processors."""

from __future__ import annotations

import math

import pytest
import torch

from tunelab.errors import ServeError
from tunelab.infer.sampling import (
    apply_repetition_penalty,
    make_generator,
    next_token_probs,
    pick_token,
    process_logits,
)
from tunelab.infer.types import SamplingParams


def test_repetition_penalty_hand_values():
    out = apply_repetition_penalty(torch.tensor([2.0, -2.0, 1.0]), [0, 1, 1], 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    p = next_token_probs(probs.log(), SamplingParams(temperature=1.0, top_p=0.8), [])
    assert torch.allclose(p, torch.tensor([0.625, 0.375, 0.0, 0.0]))


def test_top_k_and_greedy():
    logits = torch.tensor([0.1, 3.0, 2.0, -1.0])
    p = next_token_probs(logits, SamplingParams(temperature=1.0, top_k=2), [])
    e1, e2 = math.exp(3.0), math.exp(2.0)
    assert torch.allclose(p, torch.tensor([0.0, e1 / (e1 + e2), e2 / (e1 + e2), 0.0]))
    assert next_token_probs(logits, SamplingParams(), []).tolist() == [0.0, 1.0, 0.0, 0.0]
    assert pick_token(logits, SamplingParams(), [], None) == 1


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.7, top_k=50, top_p=0.9, repetition_penalty=1.3),
        SamplingParams(temperature=1.5, top_p=0.5),
        SamplingParams(temperature=0.3, top_k=3),
    ],
)
def test_matches_transformers_processors(params):
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(512, generator=gen) * 3
    context = [5, 9, 9, 100, 511]
    chain = [RepetitionPenaltyLogitsProcessor(params.repetition_penalty), TemperatureLogitsWarper(params.temperature)]
    if params.top_k:
        chain.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1:
        chain.append(TopPLogitsWarper(params.top_p))
    theirs = LogitsProcessorList(chain)(torch.tensor([context]), logits[None].clone())[0]
    ours = process_logits(logits, params, context)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    finite = ~torch.isinf(ours)
    assert torch.allclose(ours[finite], theirs[finite], atol=1e-6)


def test_seeded_generator_is_reproducible():
    probs_logits = torch.zeros(512)
    params = SamplingParams(temperature=1.0)
    g1, g2 = make_generator(3), make_generator(3)
    seq1 = [pick_token(probs_logits, params, [], g1) for _ in range(20)]
    seq2 = [pick_token(probs_logits, params, [], g2) for _ in range(20)]
    assert seq1 == seq2
    assert seq1 != [pick_token(probs_logits, params, [], make_generator(4)) for _ in range(20)]


def test_invalid_params_name_the_field():
    with pytest.raises(ServeError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ServeError, match="temperature"):
        SamplingParams(temperature=-1)
