"""LoRA dropout that keeps a seed for backward instead of two full-precision copies of its input.

LoRA (Hu et al., 2021, arXiv:2106.09685) adds ``B(A(dropout(x))) * scaling`` to each adapted
layer. peft runs that as three autograd nodes: ``dropout`` (on CPU: ``x * noise`` with a float
``noise`` tensor, which the multiplication saves), then ``lora_A`` (a linear layer, which saves
its input, the dropped copy of ``x``). So every adapted layer keeps two fp32 tensors the size of
its input for backward, on top of ``x`` itself (already saved by the frozen base layer): with
LoRA on all seven linears of a Llama block that is ~40 KB per token per layer in fp32, about
half of everything a SmolLM2-135M step saves (``bench/profile_step.py --memory``).

Here ``A(dropout(x))`` is one autograd function: forward draws a seed from torch's default
generator, expands it into the keep-mask (:func:`keep_mask`), computes ``A((x * mask) / (1 - p))``
and saves ``x`` (shared with the base layer, so free), ``A`` and the seed; backward expands the
same seed into the same mask again for ``A``'s gradient. Nothing of the mask's size is kept, and
under checkpointing the recomputed forward draws the same seed (torch replays the generator).
Same distribution (an independent Bernoulli keep-mask per element and call, inverted scaling; the
keep rate rounded to a multiple of 1/65536), same forward values and the same gradients as peft's
path for the same mask.

The mask comes from 16-bit lanes of 64-bit random words: torch's CPU ``bernoulli_`` draws one
generator number per element (26.8 ms for a 4096 x 576 mask, 2 threads), a quarter as many 64-bit
words compared as 16-bit lanes take 6.9 ms (3.9x less; ``python bench/dropout_mask.py``), so
drawing every mask twice, in forward and again in backward, still costs less than drawing it
once with ``bernoulli_``.

Checked by: tests/train/test_lora_dropout.py (outputs and gradients equal to peft's dropout +
linear for the same mask, keep rate, eval mode and merged adapters unchanged, nothing saved for the mask).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def draw_seed() -> int:
    """A mask seed from torch's default CPU generator (``torch.manual_seed`` and checkpoint replay
    reproduce it)."""
    return int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64))


def keep_mask(shape: torch.Size, keep: float, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """Bool keep-mask of ``shape``, each element independently True with probability
    ``round(keep · 65536) / 65536``, a function of ``seed`` alone.

    Each element is one uniform 16-bit lane of a random 64-bit word compared with a threshold: a
    quarter of the generator calls of ``bernoulli_``, which draws one number per element.
    """
    threshold = round(keep * 65536) - 32768  # lanes are uniform on [-32768, 32767]
    if threshold >= 32768 or threshold <= -32768:  # outside int16: keep all or nothing
        return torch.full(shape, threshold > 0, dtype=torch.bool, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None, generator=generator)
    return words.view(torch.int16)[:n].lt(threshold).view(shape)


def dropout_mask(ctx, like: Tensor, p: float) -> Tensor:
    """Draw a keep-mask for ``like`` and remember its seed on ``ctx`` (see :func:`redraw_mask`)."""
    ctx.mask_seed = draw_seed()
    return keep_mask(like.shape, 1.0 - p, ctx.mask_seed, like.device)


def redraw_mask(ctx, like: Tensor, p: float) -> Tensor:
    """The mask :func:`dropout_mask` drew in forward, rebuilt in backward from its seed."""
    return keep_mask(like.shape, 1.0 - p, ctx.mask_seed, like.device)


class _MaskedDropLinear(torch.autograd.Function):
    """``F.linear(x * mask / keep, weight)`` saving ``x`` and the mask's seed, not the product."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, p: float) -> Tensor:
        keep = 1.0 - p
        dropped = (x * dropout_mask(ctx, x, p)).mul_(1.0 / keep)
        out = F.linear(dropped, weight)  # autocast (if on) casts here, as peft's lora_A would
        ctx.save_for_backward(x, weight)
        ctx.scale, ctx.dtype, ctx.p = 1.0 / keep, out.dtype, p
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        mask = redraw_mask(ctx, x, ctx.p)
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
