"""The lean draft runner computes what transformers computes: prefill, one-token steps, multi-token
catch-up, rollback of rejected tokens and buffer growth, against ``LlamaForCausalLM``'s own logits."""

from __future__ import annotations

import copy

import torch

from tunelab.infer.cache import KVState
from tunelab.infer.drafting import restrict_head
from tunelab.infer.lean import LeanState, lean_state, supported


def reference(model, tokens: list[int], last: int) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([tokens])).logits[0, -last:].float()


def test_lean_logits_equal_transformers_through_steps_rollback_and_growth(draft_lm, prompts):
    assert supported(draft_lm)
    state = LeanState(draft_lm)
    seq = list(prompts[1])
    assert torch.allclose(state.logits(seq, last=3), reference(draft_lm, seq, 3), atol=1e-4)  # prefill
    for token in (5, 17, 300):  # one-token steps
        seq.append(token)
        assert torch.allclose(state.logits(seq), reference(draft_lm, seq, 1), atol=1e-4)
    rolled = seq[:-2] + [9, 10, 11]  # two tokens rejected, three new ones in one pass
    assert torch.allclose(state.logits(rolled, last=3), reference(draft_lm, rolled, 3), atol=1e-4)
    assert state.tokens == rolled and state.forward_passes == 5
    long = rolled + [(7 * i) % 500 for i in range(300)]  # past the first 256-position buffer
    assert torch.allclose(state.logits(long, last=2), reference(draft_lm, long, 2), atol=1e-4)
    assert state.keys.shape[2] >= len(long)


def test_lean_with_a_restricted_head_and_int8(draft_lm, prompts):
    small = restrict_head(copy.deepcopy(draft_lm), list(range(0, 512, 4)))
    seq = list(prompts[0])
    assert torch.allclose(LeanState(small).logits(seq), reference(small, seq, 1), atol=1e-4)
    int8 = LeanState(small, quantize="int8")
    logits = int8.logits(seq)
    assert logits.shape == (1, 128) and torch.isfinite(logits).all()
    assert isinstance(int8.head, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(small.lm_head, torch.nn.Linear)  # the model itself is not quantized


def test_unsupported_models_fall_back_to_transformers(draft_lm):
    other = copy.deepcopy(draft_lm)
    other.config.attention_bias = True
    assert not supported(other) and isinstance(lean_state(other), KVState)
