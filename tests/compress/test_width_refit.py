"""The least-squares refit of ``down_proj`` after width pruning (He et al. 2017): the Gram matrices are
the hooked activations' ``aᵀa``, the refit solves the normal equations, keeps ``W`` when nothing is
removed, and never reconstructs the MLP output worse than plain column removal on the same tokens."""

from __future__ import annotations

import torch

from tunelab.compress.prune import decoder_layers
from tunelab.compress.width import channel_importance, channels_to_keep, down_grams, prune_channels, refit_down


def calib(tokenizer):
    texts = [
        "the quick brown fox jumps over the lazy dog while the cat sleeps",
        "a model is a small thing that predicts the next token of a text",
        "hello world, hello again, and hello to everyone reading this line",
        "pruning removes channels; least squares puts their output back",
        "twelve short sentences give more real tokens than kept channels",
        "so the kept channels' Gram matrix has full rank on this batch",
        "numbers like 3, 14, 159 and 2653 are tokens too, one by one",
        "lighthouses stand on rocks and keepers write in their log books",
        "a message in a bottle drifted for years before it reached land",
        "distillation teaches a student with the teacher's distribution",
        "the pruned model is smaller and decodes faster on the CPU",
        "every layer keeps the same number of MLP channels in the config",
    ]
    return [tokenizer(texts, return_tensors="pt", padding=True)]


def down_inputs(model, batch, layer):
    """(real tokens, I) input of ``down_proj`` in ``layer`` and (real tokens, H) input of the MLP."""
    captured = {}
    mlp = decoder_layers(model)[layer].mlp
    handles = [
        mlp.register_forward_pre_hook(lambda m, args: captured.__setitem__("x", args[0].detach())),
        mlp.down_proj.register_forward_pre_hook(lambda m, args: captured.__setitem__("a", args[0].detach())),
    ]
    with torch.no_grad():
        model(**batch)
    for h in handles:
        h.remove()
    mask = batch["attention_mask"].bool()
    return captured["a"][mask], captured["x"][mask]


def test_grams_are_the_activations_outer_products_and_give_the_same_importance(tiny_model, tiny_tokenizer):
    batch = calib(tiny_tokenizer)[0]
    a, _ = down_inputs(tiny_model, batch, 2)
    grams = down_grams(tiny_model, [batch])
    assert len(grams) == 4 and grams[2].shape == (192, 192) and grams[2].dtype == torch.float64
    assert torch.allclose(grams[2], a.double().T @ a.double(), rtol=1e-6, atol=1e-9)
    from_grams = channel_importance(tiny_model, grams=grams)
    from_pass = channel_importance(tiny_model, [batch])
    for g, p in zip(from_grams, from_pass, strict=True):
        assert torch.allclose(g, p, rtol=1e-5)


def test_refit_solves_the_normal_equations():
    torch.manual_seed(0)
    a = torch.randn(500, 12, dtype=torch.float64) @ torch.randn(12, 12, dtype=torch.float64)  # correlated channels
    weight = torch.randn(5, 12, dtype=torch.float64)
    kept = torch.tensor([0, 2, 3, 7, 9, 11])
    fitted = refit_down(weight, kept, a.T @ a, damp=0.0)
    residual = a[:, kept] @ fitted.T - a @ weight.T  # (tokens, H)
    assert fitted.shape == (5, 6)
    assert torch.allclose(a[:, kept].T @ residual, torch.zeros(6, 5, dtype=torch.float64), atol=1e-8)
    # torch's least-squares solver on the activations themselves, not the Gram matrix
    expected = torch.linalg.lstsq(a[:, kept], a @ weight.T).solution.T
    assert torch.allclose(fitted, expected, atol=1e-8)


def test_refit_keeping_every_channel_returns_the_weight():
    torch.manual_seed(1)
    a = torch.randn(300, 8, dtype=torch.float64)
    weight = torch.randn(4, 8, dtype=torch.float32)
    fitted = refit_down(weight, torch.arange(8), a.T @ a, damp=0.0)
    assert fitted.dtype == torch.float32
    assert torch.allclose(fitted, weight, atol=1e-5)


def test_refitted_mlp_reconstructs_the_calibration_output_better_than_plain_removal(tiny_model, tiny_tokenizer):
    import copy

    batch = calib(tiny_tokenizer)[0]
    grams = down_grams(tiny_model, [batch])
    keep = channels_to_keep(channel_importance(tiny_model, grams=grams), 64)
    a, x = down_inputs(tiny_model, batch, 1)
    assert a.shape[0] > 64  # more real tokens than kept channels: the kept Gram matrix has full rank
    with torch.no_grad():
        target = decoder_layers(tiny_model)[1].mlp(x)
        plain, refit = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
        prune_channels(plain, keep)
        prune_channels(refit, keep, grams, damp=0.0)
        plain_err = (decoder_layers(plain)[1].mlp(x) - target).pow(2).sum()
        refit_err = (decoder_layers(refit)[1].mlp(x) - target).pow(2).sum()
    assert refit.config.intermediate_size == 64
    assert decoder_layers(refit)[1].mlp.down_proj.weight.shape == (64, 64)
    assert refit_err < plain_err
    assert torch.equal(decoder_layers(refit)[1].mlp.gate_proj.weight, decoder_layers(plain)[1].mlp.gate_proj.weight)
