"""Unstructured magnitude pruning: zero the smallest weights of the decoder's linear layers.

Paper: Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks"
(arXiv:1506.02626): weights of small magnitude matter least, so zeroing them to a target
sparsity (globally, one threshold for every matrix, or per matrix) loses the least. Only the
linear layers inside decoder blocks are pruned; embeddings, norms and the output head stay
dense, as in SparseGPT/Wanda (Sun et al. 2023, arXiv:2306.11695).

**What this does not save.** The masks are zeros stored in dense tensors: the safetensors file
has the same size and a dense matmul does the same work, so neither the file nor the decode time
shrinks (bench/prune.py measures both). It pays only with a sparse kernel or format (2:4
semi-structured sparsity on recent GPUs, a sparse GGUF quantization), which tunelab does not
write. Structured pruning (``depth``, ``width``) removes whole matrices or rows and does shrink both.

Masks follow torch's ``torch.ao.pruning`` lifecycle (compute masks → train → squash): a
recovery fine-tune changes the weights (a merged LoRA delta is dense), so the masks are applied
again after it and the final model has exactly the sparsity asked for (tested).
"""

from __future__ import annotations

from typing import Any, Literal

from tunelab.compress.prune import decoder_layers
from tunelab.errors import ConfigError

Scope = Literal["global", "layer"]


def prunable_weights(model: Any) -> dict[str, Any]:
    """``{parameter name: weight}`` of every ``nn.Linear`` inside the decoder layers."""
    import torch.nn as nn

    layers = decoder_layers(model)
    inside = {id(m) for m in layers.modules()}
    return {
        f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) in inside
    }


def _smallest_mask(scores: Any, k: int) -> Any:
    """Boolean keep-mask of a flat tensor that drops exactly its ``k`` smallest entries (ties: the first ones)."""
    import torch

    keep = torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return keep
    threshold = torch.kthvalue(scores, k).values
    below = scores < threshold
    keep &= ~below
    ties = (scores == threshold).nonzero().flatten()[: k - int(below.sum())]
    keep[ties] = False
    return keep


def magnitude_masks(model: Any, sparsity: float, scope: Scope = "global") -> dict[str, Any]:
    """Keep-masks (True = kept) that zero ``sparsity`` of the decoder's linear weights by |w|.

    Args:
        sparsity: fraction in [0, 1) to zero; rounded to whole weights (``round(sparsity · n)``).
        scope: ``global`` = one threshold over all matrices (Han et al.), ``layer`` = the same
            sparsity in every matrix.
    """
    import torch

    if not 0 <= sparsity < 1:
        raise ConfigError(f"--sparsity {sparsity}: must be in [0, 1).\n  fix: e.g. --sparsity 0.5")
    if scope not in ("global", "layer"):
        raise ConfigError(f"--scope {scope}: unknown; choose global or layer")
    weights = prunable_weights(model)
    with torch.no_grad():
        if scope == "layer":
            return {
                name: _smallest_mask(w.abs().flatten(), round(sparsity * w.numel())).view_as(w)
                for name, w in weights.items()
            }
        flat = torch.cat([w.abs().flatten().float().cpu() for w in weights.values()])
        keep = _smallest_mask(flat, round(sparsity * flat.numel()))
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start : start + w.numel()].view_as(w).to(w.device)
        start += w.numel()
    return masks


def apply_masks(model: Any, masks: dict[str, Any]) -> Any:
    """Zero the masked weights in place (again after a recovery run: the "squash" step); returns the model."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, keep in masks.items():
            params[name].mul_(keep.to(params[name].device, params[name].dtype))
    return model


def sparsity_of(model: Any) -> float:
    """Fraction of exact zeros among the decoder's linear weights."""
    weights = prunable_weights(model).values()
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0
