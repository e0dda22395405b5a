"""Parameter counts come from the architecture and equal the real models' counts exactly."""

from __future__ import annotations

import json

import pytest

from tunelab.memory import architecture_from_config, count_parameters, preset_architecture, preset_names

# Totals published on the models' Hugging Face pages / papers (safetensors metadata).
PUBLISHED = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.1-70b": 70_553_706_496,
    "llama-3.1-405b": 405_853_388_800,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-7b": 7_615_616_512,
    "gemma-2-2b": 2_614_341_888,
    "phi-3-mini": 3_821_079_552,
    "smollm2-135m": 134_515_008,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_counts_match_published_totals(name):
    assert count_parameters(preset_architecture(name)).total == PUBLISHED[name]


def test_every_preset_loads_and_counts():
    for name in preset_names():
        counts = count_parameters(preset_architecture(name))
        assert counts.total > counts.linear > 0


def test_tiny_count_equals_loaded_model(tiny_path, tiny_model):
    arch = architecture_from_config(json.loads((tiny_path / "config.json").read_text()))
    counts = count_parameters(arch)
    assert counts.total == sum(p.numel() for p in tiny_model.parameters())
    linear = sum(p.numel() for n, p in tiny_model.named_parameters() if "layers" in n and p.ndim == 2)
    assert counts.linear == linear


def test_gqa_tied_and_untied_by_hand():
    """h=8, i=16, 1 layer, 4 heads of 2, 2 kv heads, V=10: q 64 + k 32 + v 32 + o 64 + mlp 384 + norms 16."""
    cfg = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=10, tie_word_embeddings=True)
    tied = count_parameters(architecture_from_config(cfg))
    assert tied.total == 80 + (64 + 32 + 32 + 64 + 3 * 128 + 16) + 8
    untied = count_parameters(architecture_from_config({**cfg, "tie_word_embeddings": False}))
    assert untied.total == tied.total + 80


@pytest.mark.slow
def test_bundled_count_equals_loaded_model():
    import torch
    from transformers import AutoModelForCausalLM

    from tunelab.models.resolve import resolve_model

    path = resolve_model("smollm2-135m-instruct").path
    arch = architecture_from_config(json.loads((path / "config.json").read_text()))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert count_parameters(arch).total == sum(p.numel() for p in model.parameters()) == 134_515_008
