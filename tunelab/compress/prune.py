"""Depth pruning: score each decoder layer by how little it changes its input, drop the lowest.

Papers: Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers"
(arXiv:2403.17887), and Men et al. 2024, "ShortGPT: Layers in Large Language Models are More
Redundant Than You Expect" (arXiv:2403.03853).

Intuition: a pre-norm transformer layer adds a residual update to its input, ``h_out = h_in +
f(h_in)``. Where the update is small relative to ``h_in``, the two point in nearly the same
direction and the layer can go with little loss. Gromov et al. measure this with the *angular
distance* ``arccos(cos(h_in, h_out)) / π`` (0 for a layer that returns its input, 1 for one that
reverses it); ShortGPT's "Block Influence" is ``1 - cos`` of the same pair, a monotone function of
it, so both rank layers identically. Scores are averaged over the real (non-padding) tokens of a
calibration set; the layers with the lowest scores are dropped. A short recovery fine-tune
("healing", Gromov et al. §3) then closes most of the perplexity gap.

Dropping a layer must leave a model that still runs with a KV cache and that plain transformers
loads: each kept attention's ``layer_idx`` (its slot in the cache) is renumbered 0..n-1 and
``config.num_hidden_layers`` / ``config.layer_types`` follow the kept layers.

Checked: the angular distance of a layer whose residual branch is zero is 0; the logits of a
depth-pruned model equal running its kept layers by hand (tests/compress/test_prune.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from tunelab.compress.calib import run_calibration
from tunelab.errors import ConfigError, ModelError


def decoder_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of decoder layers (``model.model.layers`` for Llama-style models).

    Found as the one ModuleList whose length is ``config.num_hidden_layers``, so that Llama, Qwen2,
    Mistral, Gemma and a peft-wrapped base are all covered without a table of attribute paths.
    """
    import torch.nn as nn

    n = text_config(model).num_hidden_layers
    for base in (getattr(model, "model", None), model):
        layers = getattr(base, "layers", None) if base is not None else None
        if isinstance(layers, nn.ModuleList) and len(layers) == n:
            return layers
    found = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if len(found) != 1:
        raise ModelError(
            f"cannot find the decoder layers of {type(model).__name__} ({len(found)} lists of {n} modules).\n"
            "  fix: prune a Llama-style causal LM (model.model.layers)"
        )
    return found[0]


def text_config(model: Any) -> Any:
    """The config holding the decoder sizes (the text config of a multimodal model)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def angular_distance(a: Any, b: Any) -> Any:
    """``arccos(cos(a, b)) / π`` along the last dimension, in [0, 1]; shape ``a.shape[:-1]``."""
    import torch

    cos = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8)
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


def layer_scores(model: Any, calib_batches: Iterable[Any]) -> list[float]:
    """Mean angular distance between each decoder layer's input and output hidden states.

    Args:
        model: a transformers causal LM (eval mode is set for the pass and restored).
        calib_batches: dicts with ``input_ids`` (B, T) and optionally ``attention_mask`` (B, T)
            (e.g. :meth:`tunelab.compress.calib.CalibrationSet.batches`, or a tokenizer's output),
            or bare (B, T) id tensors; padding tokens are excluded from the mean.

    Returns:
        One score per layer in [0, 1], lowest = most redundant (Gromov et al. 2024, eq. 7 with n=1).
    """

    layers = decoder_layers(model)
    sums = [0.0] * len(layers)
    state: dict[str, Any] = {}

    def hook(index: int):
        def capture(module, args, kwargs, output):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, tuple) else output
            dist = angular_distance(h_in, h_out)  # (B, T)
            sums[index] += float(dist[state["mask"]].sum())

        return capture

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    count = run_calibration(model, calib_batches, handles, state)
    if count == 0:
        raise ConfigError("the calibration set has no tokens.\n  fix: pass a --calib file with text rows")
    return [s / count for s in sums]


def lowest(scores: Sequence[float], n: int) -> list[int]:
    """Indices of the ``n`` lowest scores, ascending by index (ties: the deeper layer goes first)."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], -i))
    return sorted(order[:n])


def drop_layers(model: Any, indices: Iterable[int]) -> Any:
    """Remove the decoder layers at ``indices`` in place and return the model.

    The kept layers keep their weights and order; every submodule's ``layer_idx`` (the KV-cache slot)
    is renumbered 0..n-1, and the config's ``num_hidden_layers`` and ``layer_types`` follow, so that
    ``save_pretrained`` writes a folder plain ``AutoModelForCausalLM`` loads and generation with a
    cache works.
    """
    import torch.nn as nn

    layers = decoder_layers(model)
    config = text_config(model)
    drop = sorted(set(int(i) for i in indices))
    bad = [i for i in drop if not 0 <= i < len(layers)]
    if bad:
        raise ConfigError(
            f"--drop-layers {bad} out of range: the model has layers 0..{len(layers) - 1}.\n"
            "  fix: pass layer indices that exist"
        )
    if len(drop) >= len(layers):
        raise ConfigError(f"cannot drop all {len(layers)} layers.\n  fix: drop fewer layers")
    keep = [i for i in range(len(layers)) if i not in set(drop)]
    kept = [layers[i] for i in keep]
    for new_idx, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    parent = _parent_of(model, layers)
    setattr(parent[0], parent[1], nn.ModuleList(kept))
    config.num_hidden_layers = len(keep)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        config.layer_types = [layer_types[i] for i in keep]
    return model


def _parent_of(model: Any, target: Any) -> tuple[Any, str]:
    for module in model.modules():
        for name, child in module.named_children():
            if child is target:
                return module, name
    raise ModelError("decoder layers have no parent module.\n  fix: prune a Llama-style causal LM")
