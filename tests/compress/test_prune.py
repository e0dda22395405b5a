"""Depth pruning on tiny: angular distance by hand, identity layers score 0, the lowest-scoring layers go,
and the pruned model equals the original with those layers skipped (with and without a KV cache)."""

from __future__ import annotations

import math

import pytest
import torch

from tunelab.compress.prune import angular_distance, decoder_layers, drop_layers, layer_scores, lowest


class Skip(torch.nn.Module):
    """A decoder layer that returns its input: the original model with this layer removed."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


def calib(tokenizer, texts=("the quick brown fox jumps over", "a model is a small thing", "hello")):
    return [tokenizer(list(texts), return_tensors="pt", padding=True)]


def silence(layer):
    """Zero the residual branches (attention output and MLP down projection): the layer becomes identity."""
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()


def test_angular_distance_hand_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[0.0, 3.0], [1.0, 1.0], [-1.0, 0.0], [5.0, 0.0]])
    assert angular_distance(a, b).tolist() == pytest.approx([0.5, 0.25, 1.0, 0.0], abs=1e-6)
    assert math.isclose(float(angular_distance(a[:1], a[:1])), 0.0, abs_tol=1e-6)


def test_identity_layer_scores_zero_and_is_dropped(tiny_model, tiny_tokenizer):
    silence(decoder_layers(tiny_model)[2])
    scores = layer_scores(tiny_model, calib(tiny_tokenizer))
    assert len(scores) == 4
    assert scores[2] == pytest.approx(0.0, abs=1e-3)
    assert min(s for i, s in enumerate(scores) if i != 2) > 0.01
    assert lowest(scores, 1) == [2]


def test_scores_ignore_padding(tiny_model, tiny_tokenizer):
    short = "a model is a small thing"
    alone = layer_scores(tiny_model, calib(tiny_tokenizer, (short,)))
    padded = tiny_tokenizer(
        [short, short + " and it has many more words in it than the first"], return_tensors="pt", padding=True
    )
    mask_first = {k: v[:1] for k, v in padded.items()}
    assert layer_scores(tiny_model, [mask_first]) == pytest.approx(alone, abs=1e-5)


def test_lowest_picks_lowest_scores():
    assert lowest([0.3, 0.1, 0.5, 0.05, 0.2], 2) == [1, 3]
    assert lowest([0.1, 0.1, 0.4], 1) == [1]  # a tie drops the deeper layer


def test_pruned_logits_equal_skipping_the_layers(tiny_model, tiny_path, tiny_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    ids = tiny_tokenizer("the quick brown fox jumps over the lazy dog", return_tensors="pt").input_ids
    reference = AutoModelForCausalLM.from_pretrained(tiny_path, dtype="float32").eval()
    layers = decoder_layers(reference)
    layers[1], layers[3] = Skip(), Skip()
    with torch.no_grad():
        expected = reference(ids).logits

    pruned = drop_layers(tiny_model, [3, 1]).eval()
    assert pruned.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in decoder_layers(pruned)] == [0, 1]
    with torch.no_grad():
        assert torch.allclose(pruned(ids).logits, expected, atol=1e-5)
        # the KV cache works: greedy generation with a cache equals argmax without one
        out = pruned.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
        seq = ids
        for _ in range(6):
            seq = torch.cat([seq, pruned(seq).logits[:, -1:].argmax(-1)], dim=1)
        assert out.tolist() == seq.tolist()

    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="float32").eval()
    assert reloaded.config.num_hidden_layers == 2
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, expected, atol=1e-5)


def test_drop_layers_updates_layer_types(tiny_model):
    tiny_model.config.layer_types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    drop_layers(tiny_model, [0])
    assert tiny_model.config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]


def test_drop_layers_refuses_bad_indices(tiny_model):
    from tunelab.errors import ConfigError

    with pytest.raises(ConfigError, match="out of range"):
        drop_layers(tiny_model, [4])
    with pytest.raises(ConfigError, match="all 4 layers"):
        drop_layers(tiny_model, [0, 1, 2, 3])
