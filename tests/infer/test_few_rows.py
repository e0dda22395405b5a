"""Few-row products for verify passes: one-row products bit-for-bit the default, a few rows equal up to
float rounding, weights and tying untouched, and speculation through them still the target's greedy output."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.infer import Generator, SamplingParams, Speculation, few_rows
from tunelab.infer.few_rows import MAX_ROWS, available, use_few_row_products


def test_rows_weights_and_tying(lm):
    model = copy.deepcopy(lm)
    head = model.get_output_embeddings()
    weight = head.weight
    assert available(model) and use_few_row_products(model) and use_few_row_products(model)  # idempotent
    assert head.weight is weight and model.get_input_embeddings().weight is weight  # still tied
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    assert linears and all(m.forward.__func__ is few_rows._forward for m in linears)  # decoder layers and head
    for layer in (head, linears[0]):
        x = torch.randn(1, 7, layer.weight.shape[1])
        assert torch.equal(layer(x[:, :1]), F.linear(x[:, :1], layer.weight, layer.bias))  # one row: the default
        out = layer(x)
        assert out.is_contiguous() and out.shape == (1, 7, layer.weight.shape[0])
        assert torch.allclose(out, F.linear(x, layer.weight, layer.bias), atol=1e-5)  # 7 rows: same up to rounding
        big = torch.randn(MAX_ROWS + 1, layer.weight.shape[1])
        assert torch.equal(layer(big), F.linear(big, layer.weight, layer.bias))  # larger products keep the default
    clone = copy.deepcopy(model)  # a patched model still copies; the copy runs on its own weights
    assert clone.get_output_embeddings().forward.__self__ is clone.get_output_embeddings()


def test_a_bias_is_added_once():
    layer = nn.Linear(6, 4)
    use_few_row_products(layer)
    x = torch.randn(3, 6)
    assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-6)


def test_not_applied_to_other_dtypes(lm):
    model = copy.deepcopy(lm).to(torch.bfloat16)
    assert not available(model) and not use_few_row_products(model)


def test_speculation_through_few_row_products_is_token_identical(tiny_path, draft_lm, tiny_tokenizer, prompts):
    from transformers import AutoModelForCausalLM

    fresh = AutoModelForCausalLM.from_pretrained(tiny_path).eval()  # (the shared `lm` may be patched already)
    plain = Generator(fresh, tiny_tokenizer)
    spec = Generator(copy.deepcopy(fresh), tiny_tokenizer, draft_model=draft_lm)
    for prompt in prompts:
        ref = plain.generate(prompt, SamplingParams(max_new_tokens=16))
        out = spec.generate(prompt, SamplingParams(max_new_tokens=16), speculation=Speculation("draft", 4))
        assert out.tokens == ref.tokens
    assert getattr(spec.model.get_output_embeddings().forward, "__func__", None) is few_rows._forward
    assert getattr(plain.model.get_output_embeddings().forward, "__func__", None) is not few_rows._forward
