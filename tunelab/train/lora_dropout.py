"""LoRA dropout that keeps a 1-byte mask for backward instead of two full-precision copies.

LoRA (Hu et al., 2021, arXiv:2106.09685) adds ``B(A(dropout(x))) * scaling`` to each adapted
layer. peft runs that as three autograd nodes: ``dropout`` (on CPU: ``x * noise`` with a float
``noise`` tensor, which the multiplication saves), then ``lora_A`` (a linear layer, which saves
its input, the dropped copy of ``x``). So every adapted layer keeps two fp32 tensors the size of
its input for backward, on top of ``x`` itself (already saved by the frozen base layer): with
LoRA on all seven linears of a Llama block that is ~40 KB per token per layer in fp32, about
half of everything a SmolLM2-135M step saves (``bench/profile_step.py --memory``).

Here ``A(dropout(x))`` is one autograd function: forward draws the keep-mask as ``bool`` (1
byte per element), computes ``A((x * mask) / (1 - p))``, and saves ``x`` (shared with the base
layer, so free), the mask and ``A``; backward rebuilds the dropped input from ``x`` and the mask
(one elementwise pass) for ``A``'s gradient. Same distribution (an independent Bernoulli(1 - p)
keep-mask per element and call, inverted scaling), same forward values and the same gradients
as peft's path for the same mask; the mask costs 1/8 of the two copies it replaces.

Checked by: tests/train/test_lora_dropout.py (outputs and gradients equal to peft's dropout +
linear for the same mask, keep rate, eval mode and merged adapters unchanged, saved bytes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _MaskedDropLinear(torch.autograd.Function):
    """``F.linear(x * mask / keep, weight)`` saving ``x`` and a bool ``mask``, not the product."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, p: float) -> Tensor:
        keep = 1.0 - p
        mask = torch.empty(x.shape, dtype=torch.bool, device=x.device).bernoulli_(keep)
        dropped = (x * mask).mul_(1.0 / keep)
        out = F.linear(dropped, weight)  # autocast (if on) casts here, as peft's lora_A would
        ctx.save_for_backward(x, weight, mask)
        ctx.scale, ctx.dtype = 1.0 / keep, out.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight, mask = ctx.saved_tensors
        dtype = grad_out.dtype
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = ((grad_out @ weight.to(dtype)).to(x.dtype) * mask).mul_(ctx.scale)
        if ctx.needs_input_grad[1]:
            dropped = (x * mask).mul_(ctx.scale).to(dtype)
            grad_w = (grad_out.flatten(0, -2).t() @ dropped.flatten(0, -2)).to(weight.dtype)
        return grad_x, grad_w, None


class MaskedDropoutLinear(nn.Linear):
    """peft's ``lora_A`` linear with the adapter's dropout folded in (``dropout_p``); the
    parameters, their names and the saved adapter are unchanged (only the class is swapped)."""

    dropout_p: float = 0.0

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.dropout_p > 0):
            return super().forward(x)
        if not torch.is_grad_enabled() or self.bias is not None:  # nothing to save: plain dropout
            return super().forward(F.dropout(x, self.dropout_p, training=True))
        return _MaskedDropLinear.apply(x, self.weight, self.dropout_p)


def fold_lora_dropout(model: nn.Module) -> int:
    """Fold each plain LoRA adapter's ``nn.Dropout`` into its ``lora_A`` linear (in place).

    Touches only vanilla LoRA on linear layers (not DoRA or other variants, whose forward uses the
    dropout module differently, nor embeddings/convolutions). Returns the number of adapters folded.
    """
    folded = 0
    for module in model.modules():
        drops, lora_a = getattr(module, "lora_dropout", None), getattr(module, "lora_A", None)
        if not isinstance(drops, nn.ModuleDict) or not isinstance(lora_a, nn.ModuleDict):
            continue
        variants = getattr(module, "lora_variant", {}) or {}
        for name, drop in list(drops.items()):
            linear = lora_a[name] if name in lora_a else None
            if name in variants or type(drop) is not nn.Dropout or type(linear) is not nn.Linear or drop.p <= 0:
                continue
            linear.__class__ = MaskedDropoutLinear
            linear.dropout_p = float(drop.p)
            drops[name] = nn.Identity()
            folded += 1
    return folded
