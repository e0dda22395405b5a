"""Few-row products at the one-row product's speed, for the target's speculative verify pass on the CPU.

Why: a CPU decode step of a small model reads every weight once; its cost is the weight bytes. The
verify pass of speculative decoding feeds ``k + 1`` tokens, and PyTorch's default ``F.linear``
(MKL sgemm of ``x @ W.T``) multiplies those few rows well below that bandwidth: on a 2-core AMD
EPYC a verify pass of SmolLM2-135M over 2-7 tokens cost 1.54-2.06 one-token steps, which capped
any draft's speedup near 1x. The same product written with the weight as the left operand,
``(W @ x.T).T``, takes MKL's other code path and streams the weight once for all rows: the whole
verify pass over 2-5 tokens costs 0.88-1.10 steps (``python bench/draft.py --levers``).

Greedy speculative output stays the target's: one-row products (plain decoding) still run
``F.linear`` unchanged, and the verify pass only decides which drafted tokens equal the target's
argmax; the two kernels differ by float rounding (~1e-6), as the one-row and multi-row sgemm already
did, and equality with plain greedy decoding is checked on every measured prompt by ``tunelab draft``.
Products of more rows (prefill, batches) keep the default: there the default is efficient.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_ROWS = 16  # verify passes are k + 1 rows; larger products (prefill, batches) keep the default kernel


def _forward(self: nn.Linear, x: Tensor) -> Tensor:
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if not 1 < rows <= MAX_ROWS or x.dtype != torch.float32 or x.device.type != "cpu":
        return F.linear(x, self.weight, self.bias)
    out = (self.weight @ x.reshape(rows, -1).t()).t()
    if self.bias is not None:
        out = out + self.bias
    return out.contiguous().reshape(*x.shape[:-1], -1)


def _patchable(module: nn.Module) -> bool:
    return type(module) is nn.Linear and module.weight.device.type == "cpu" and module.weight.dtype == torch.float32


def available(model) -> bool:
    """Whether :func:`use_few_row_products` applies: fp32 ``nn.Linear`` layers on the CPU."""
    return any(_patchable(m) for m in model.modules())


def use_few_row_products(model) -> bool:
    """Route the 2..:data:`MAX_ROWS`-row products of ``model``'s fp32 CPU ``nn.Linear`` layers (decoder
    and output head) through ``(W @ x.T).T`` (in place; weights, their tying and every one-row product
    stay as they are). Idempotent. Returns whether any layer applied."""
    applied = False
    for module in model.modules():
        if _patchable(module):
            if getattr(module.forward, "__func__", None) is not _forward:
                module.forward = types.MethodType(_forward, module)
            applied = True
    return applied
