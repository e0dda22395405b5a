"""Width and magnitude pruning on tiny: the pruned MLP equals the original minus the pruned channels'
contribution, the lowest-contribution channels go, the config follows, and magnitude sparsity is exact."""

from __future__ import annotations

import pytest
import torch

from tunelab.compress.magnitude import apply_masks, magnitude_masks, prunable_weights, sparsity_of
from tunelab.compress.prune import decoder_layers
from tunelab.compress.width import channel_importance, channels_to_keep, kept_width, prune_channels
from tunelab.errors import ConfigError


def calib(tokenizer):
    texts = ["the quick brown fox jumps over", "a model is a small thing", "hello world, hello again"]
    return [tokenizer(texts, return_tensors="pt", padding=True)]


def test_width_pruned_mlp_equals_original_without_pruned_channels(tiny_model):
    torch.manual_seed(0)
    mlp = decoder_layers(tiny_model)[1].mlp
    keep = torch.tensor(sorted(torch.randperm(192)[:96].tolist()))
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        expected = mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x) * _indicator(keep, 192))
        prune_channels(tiny_model, [keep] * 4)
        got = decoder_layers(tiny_model)[1].mlp(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6)
    assert tiny_model.config.intermediate_size == 96
    assert decoder_layers(tiny_model)[1].mlp.down_proj.weight.shape == (64, 96)
    assert decoder_layers(tiny_model)[1].mlp.gate_proj.weight.shape == (96, 64)


def _indicator(keep, n):
    mask = torch.zeros(n)
    mask[keep] = 1.0
    return mask


def test_importance_is_activation_norm_times_down_column_norm(tiny_model, tiny_tokenizer):
    batch = calib(tiny_tokenizer)[0]
    captured = []
    mlp = decoder_layers(tiny_model)[2].mlp
    handle = mlp.down_proj.register_forward_pre_hook(lambda m, args: captured.append(args[0].detach()))
    with torch.no_grad():
        tiny_model(**batch)
    handle.remove()
    real = captured[0][batch["attention_mask"].bool()]  # (tokens, I) padding excluded
    expected = real.pow(2).sum(0).sqrt() * mlp.down_proj.weight.norm(dim=0)
    scores = channel_importance(tiny_model, [batch])
    assert len(scores) == 4 and scores[2].shape == (192,)
    assert torch.allclose(scores[2], expected, rtol=1e-4)


def test_channels_with_no_contribution_are_pruned_first(tiny_model, tiny_tokenizer):
    dead = [5, 17, 100]
    for layer in decoder_layers(tiny_model):
        with torch.no_grad():
            layer.mlp.down_proj.weight[:, dead] = 0.0
    scores = channel_importance(tiny_model, calib(tiny_tokenizer))
    kept = channels_to_keep(scores, 192 - 3)
    for index in kept:
        assert not set(dead) & set(index.tolist())
    with torch.no_grad():
        before = tiny_model(**calib(tiny_tokenizer)[0]).logits
        prune_channels(tiny_model, kept)
        after = tiny_model(**calib(tiny_tokenizer)[0]).logits
    assert torch.allclose(before, after, atol=1e-5)  # removing dead channels changes nothing


def test_width_pruned_model_saves_and_reloads(tiny_model, tiny_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    prune_channels(tiny_model, channels_to_keep(channel_importance(tiny_model, calib(tiny_tokenizer)), 64))
    tiny_model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="float32")
    assert reloaded.config.intermediate_size == 64
    batch = calib(tiny_tokenizer)[0]
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, tiny_model.eval()(**batch).logits, atol=1e-6)


def test_prune_channels_refuses_uneven_counts(tiny_model):
    with pytest.raises(ConfigError, match="one channel count"):
        prune_channels(tiny_model, [torch.arange(10), torch.arange(12), torch.arange(10), torch.arange(10)])


def test_kept_width_rounding():
    assert kept_width(1536, 0.66) == 1024  # 1013.8 → nearest multiple of 64 (a real model's MLP)
    assert kept_width(1536, 0.645) == 960  # 990.7: 992 is the nearest multiple of 32, but 992 is slow in llama.cpp
    assert kept_width(1536, 992) == 992  # a count: a multiple of 32 is kept as asked
    assert kept_width(1536, 1000) == 992  # … and rounded to one otherwise
    assert kept_width(192, 0.5) == 96  # a toy MLP: multiples of 32
    assert kept_width(192, 100) == 96  # a count, rounded to 32
    assert kept_width(40, 0.5) == 20  # too narrow to round to 32
    with pytest.raises(ConfigError):
        kept_width(192, 0)
    with pytest.raises(ConfigError):
        kept_width(192, 500)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_sparsity_is_exact_and_drops_smallest(tiny_model, scope):
    weights = {k: v.detach().clone() for k, v in prunable_weights(tiny_model).items()}
    embeddings = tiny_model.model.embed_tokens.weight.detach().clone()
    assert len(weights) == 4 * 7  # q, k, v, o, gate, up, down in each of 4 layers
    masks = magnitude_masks(tiny_model, 0.5, scope)
    apply_masks(tiny_model, masks)
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((~m).sum()) for m in masks.values())
    assert zeros == round(0.5 * total)
    assert sparsity_of(tiny_model) == pytest.approx(zeros / total)
    if scope == "layer":
        for name, m in masks.items():
            assert int((~m).sum()) == round(0.5 * m.numel()), name
    groups = [list(weights)] if scope == "global" else [[n] for n in weights]
    for names in groups:  # every kept |w| ≥ every pruned |w| within the scope
        kept = torch.cat([weights[n].abs()[masks[n]] for n in names])
        pruned = torch.cat([weights[n].abs()[~masks[n]] for n in names])
        assert kept.min() >= pruned.max()
    # embeddings and norms are not touched
    assert torch.equal(tiny_model.model.embed_tokens.weight, embeddings)


def test_magnitude_masks_handle_ties_exactly():
    from tunelab.compress.magnitude import _smallest_mask

    scores = torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0])
    keep = _smallest_mask(scores, 2)
    assert keep.tolist() == [False, False, True, True, True]
    assert _smallest_mask(scores, 0).all()


def test_magnitude_refuses_bad_sparsity(tiny_model):
    with pytest.raises(ConfigError, match="sparsity"):
        magnitude_masks(tiny_model, 1.0)
