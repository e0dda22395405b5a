"""A gated MLP (SwiGLU) with a LoRA ``down_proj`` that saves only its two gate inputs for backward.

A Llama-style MLP computes ``down(silu(gate(x)) * up(x))`` (Shazeer, 2020, "GLU Variants Improve
Transformer", arXiv:2002.05202). Run as separate ops it keeps four intermediate-size tensors per
token for backward: ``gate(x)`` (for silu), ``silu(gate(x))`` and ``up(x)`` (for the product), and
the product ``h`` (the input of ``down``'s LoRA ``A``, with the LoRA dropout folded in:
tunelab/train/lora_dropout.py). With ``intermediate = 8/3 hidden`` those four are ~half of
everything a LoRA step saves. Here the activation, the product and ``down``'s LoRA ``A`` (with its
dropout) are one autograd function that saves ``gate(x)``, ``up(x)`` and the dropout mask's seed,
and recomputes ``silu``, ``h`` and the mask in backward (two elementwise passes over the intermediate
width, cheap next to the three matmuls around them). The frozen base ``down`` keeps only its
weight. Same values and gradients for the same dropout mask.

Checked by: tests/train/test_lean_mlp.py (loss and every gradient equal to peft's MLP for the same
masks, eval/merged paths unchanged, saved bytes).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunelab.train.lora_dropout import MaskedDropoutLinear, dropout_mask, redraw_mask

#: Activation modules that compute exactly ``F.silu`` (torch's and transformers').
SILU = ("SiLU", "SiLUActivation")


class _SwiGLUDownA(torch.autograd.Function):
    """``h = silu(g) * u`` and ``A(dropout(h))``; saves ``g``, ``u`` and the mask's seed, not ``h``."""

    @staticmethod
    def forward(ctx, g: Tensor, u: Tensor, weight: Tensor, p: float):
        h = F.silu(g) * u
        scale = 1.0 / (1.0 - p)
        mask = dropout_mask(ctx, h, p) if p > 0 else None
        a = F.linear(h if mask is None else (h * mask).mul_(scale), weight)
        ctx.save_for_backward(g, u, weight)
        ctx.scale, ctx.p = scale, p
        return h, a

    @staticmethod
    def backward(ctx, grad_h: Tensor | None, grad_a: Tensor | None):
        g, u, weight = ctx.saved_tensors
        mask = redraw_mask(ctx, g, ctx.p) if ctx.p > 0 else None
        sig = torch.sigmoid(g)
        silu = g * sig
        grad_w = None
        grad = grad_h
        if grad_a is not None:
            from_a = (grad_a @ weight.to(grad_a.dtype)).to(g.dtype)
            if mask is not None:
                from_a = (from_a * mask).mul_(ctx.scale)
            grad = from_a if grad is None else grad + from_a
            if ctx.needs_input_grad[2]:
                h = silu * u
                if mask is not None:
                    h = (h * mask).mul_(ctx.scale)
                grad_w = (grad_a.flatten(0, -2).t() @ h.to(grad_a.dtype).flatten(0, -2)).to(weight.dtype)
        if grad is None:
            return None, None, grad_w, None
        grad_u = grad * silu
        # d silu / dg = sigmoid(g) * (1 + g * (1 - sigmoid(g)))
        grad_g = grad * u * sig * (1 + g * (1 - sig))
        return grad_g, grad_u, grad_w, None


def _lora_down(down: nn.Module):
    """``(base, lora_A, lora_B, scaling)`` when ``down`` is an unmerged peft LoRA linear with one
    plain adapter whose dropout is folded (or zero); None otherwise."""
    adapters = getattr(down, "active_adapters", None)
    if not adapters or len(adapters) != 1 or getattr(down, "merged", False) or getattr(down, "disable_adapters", True):
        return None
    name = adapters[0]
    if name in (getattr(down, "lora_variant", {}) or {}) or name not in down.lora_A:
        return None
    a, drop = down.lora_A[name], down.lora_dropout[name]
    folded = type(a) is MaskedDropoutLinear or (type(a) is nn.Linear and type(drop) is nn.Identity)
    base = down.base_layer
    if not folded or type(base) is not nn.Linear or base.weight.requires_grad or a.bias is not None:
        return None
    return base, a, down.lora_B[name], down.scaling[name]


def _lean_forward(self, x: Tensor) -> Tensor:
    parts = _lora_down(self.down_proj) if self.training and torch.is_grad_enabled() else None
    if parts is None:
        return self._plain_forward(x)
    base, lora_a, lora_b, scaling = parts
    h, a = _SwiGLUDownA.apply(self.gate_proj(x), self.up_proj(x), lora_a.weight, getattr(lora_a, "dropout_p", 0.0))
    return base(h) + lora_b(a) * scaling


def fuse_gated_mlps(model: nn.Module) -> int:
    """Route each SwiGLU MLP (``gate_proj``/``up_proj``/``down_proj`` with a SiLU ``act_fn``) through
    :class:`_SwiGLUDownA` while training with a folded LoRA ``down_proj``. Returns the MLPs patched."""
    patched = 0
    for module in model.modules():
        if not all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            continue
        if type(module.act_fn).__name__ not in SILU or hasattr(module, "_plain_forward"):
            continue
        module._plain_forward = module.forward
        module.forward = types.MethodType(_lean_forward, module)
        patched += 1
    return patched
