"""The oneDNN head for verify passes: one-row products bit-for-bit the default, a few rows equal to
float rounding, weights and tying untouched, and speculation through it still the target's greedy output."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from tunelab.infer import Generator, SamplingParams, Speculation, verify_head
from tunelab.infer.verify_head import MAX_ROWS, available, use_onednn_head


def test_head_kernel_rows_and_weights(lm):
    model = copy.deepcopy(lm)
    head = model.get_output_embeddings()
    weight = head.weight
    assert available(model) and use_onednn_head(model) and use_onednn_head(model)  # idempotent
    assert head.weight is weight and model.get_input_embeddings().weight is weight  # still tied
    x = torch.randn(1, 7, weight.shape[1])
    assert torch.equal(head(x[:, :1]), F.linear(x[:, :1], weight))  # one row: the default kernel
    assert torch.allclose(head(x), F.linear(x, weight), atol=1e-5)  # 7 rows: oneDNN, same up to rounding
    clone = copy.deepcopy(model)  # a patched model still copies; the copy runs on its own weights
    assert clone.get_output_embeddings().forward.__self__ is clone.get_output_embeddings()
    assert torch.allclose(clone.get_output_embeddings()(x), F.linear(x, weight), atol=1e-5)
    big = torch.randn(MAX_ROWS + 1, weight.shape[1])
    assert torch.equal(head(big), F.linear(big, weight))  # larger products keep the default
    with torch.no_grad():
        weight.mul_(2.0)  # an in-place change is not seen by the converted copy: the model must not be trained
    head.weight = torch.nn.Parameter(weight.detach().clone())  # a replaced weight is converted again
    assert torch.allclose(head(x), F.linear(x, head.weight), atol=1e-5)


def test_not_applied_to_other_heads(lm):
    model = copy.deepcopy(lm).to(torch.bfloat16)
    assert not available(model) and not use_onednn_head(model)


def test_speculation_through_the_onednn_head_is_token_identical(tiny_path, draft_lm, tiny_tokenizer, prompts):
    from transformers import AutoModelForCausalLM

    fresh = AutoModelForCausalLM.from_pretrained(tiny_path).eval()  # (the shared `lm` may be patched already)
    plain = Generator(fresh, tiny_tokenizer)
    spec = Generator(copy.deepcopy(fresh), tiny_tokenizer, draft_model=draft_lm)
    for prompt in prompts:
        ref = plain.generate(prompt, SamplingParams(max_new_tokens=16))
        out = spec.generate(prompt, SamplingParams(max_new_tokens=16), speculation=Speculation("draft", 4))
        assert out.tokens == ref.tokens
    assert getattr(spec.model.get_output_embeddings().forward, "__func__", None) is verify_head._forward
    assert getattr(plain.model.get_output_embeddings().forward, "__func__", None) is not verify_head._forward
