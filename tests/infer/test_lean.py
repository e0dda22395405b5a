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


def test_generator_lean_decodes_what_transformers_decodes(lm, tiny_tokenizer, prompts, draft_lm, monkeypatch):
    """``Generator(lean=True)`` (``tunelab serve --lean``): greedy tokens equal the default step's and
    ``generate()``'s, sampled ones under a seed too, and speculative decoding on a lean target keeps
    the target's greedy output."""
    from tunelab.infer import SamplingParams, Speculation
    from tunelab.infer.decode import Generator

    lean_calls = []
    logits = LeanState.logits
    monkeypatch.setattr(LeanState, "logits", lambda self, *a, **k: lean_calls.append(1) or logits(self, *a, **k))
    plain, lean = Generator(lm, tiny_tokenizer), Generator(lm, tiny_tokenizer, draft_model=draft_lm, lean=True)
    assert lean.prefix_cache is None  # no DynamicCache to keep
    greedy = SamplingParams(max_new_tokens=12)
    sampled = SamplingParams(max_new_tokens=12, temperature=0.8, seed=3)
    for prompt in prompts:
        ref = plain.generate(prompt, greedy).tokens
        hf = lm.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=0)
        before = len(lean_calls)
        assert lean.generate(prompt, greedy).tokens == ref == hf[0, len(prompt) :].tolist()[: len(ref)]
        assert len(lean_calls) - before == len(ref)  # one lean step per token: the lean path decoded
        assert lean.generate(prompt, sampled).tokens == plain.generate(prompt, sampled).tokens
        fast = lean.generate(prompt, greedy, speculation=Speculation(kind="draft", num_tokens=3))
        assert fast.tokens == ref and fast.timings.drafted > 0


def test_lean_refuses_what_it_cannot_decode_naming_the_flag(lm, tiny_tokenizer):
    import pytest
    from peft import LoraConfig, get_peft_model

    from tunelab.errors import ConfigError
    from tunelab.infer.decode import Generator
    from tunelab.infer.engines import EngineOptions, refuse_unsupported

    adapted = get_peft_model(copy.deepcopy(lm), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ConfigError, match=r"--lean: .*PeftModel.*\n  fix: merge the adapters"):
        Generator(adapted, tiny_tokenizer, lean=True)
    with pytest.raises(ConfigError, match=r"--lean: the lean step keeps its own .*\n  fix: drop --static-cache"):
        Generator(lm, tiny_tokenizer, lean=True, static_cache=True)
    with pytest.raises(ConfigError, match="--lean: --engine llama.cpp decodes with its own kernels"):
        refuse_unsupported("llama.cpp", EngineOptions(lean=True))
