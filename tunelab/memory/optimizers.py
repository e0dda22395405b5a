"""Optimizer state bytes, one function per optimizer (a registry).

* AdamW (Loshchilov & Hutter 2019): two moments shaped like each parameter, in the parameter's
  dtype (torch creates them with ``zeros_like``); pure-bf16 training therefore has bf16 moments.
  torch also keeps a 0-d fp32 ``step`` tensor per parameter.
* bitsandbytes 8-bit AdamW (Dettmers et al. 2022, arXiv:2110.02861): both moments as uint8 with
  one fp32 absmax per 256-value block; tensors under 4,096 elements keep fp32 moments
  (``min_8bit_size``). The 256-entry quantization maps are shared by all tensors.
* Paged variants hold the same bytes in CUDA unified memory that can be evicted to the host
  under pressure; the planner counts them on the GPU (the usual case when memory suffices).
* SGD with momentum: one buffer per parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from tunelab.registry import Registry

BNB_BLOCK = 256
BNB_MIN_8BIT_SIZE = 4096


def adamw_bytes(sizes: Sequence[int], param_bytes: float) -> float:
    """``2 · numel · param_bytes`` moments + ``4`` bytes of ``step`` per tensor."""
    return sum(2 * n * param_bytes + 4 for n in sizes)


def adamw_8bit_bytes(sizes: Sequence[int], param_bytes: float) -> float:
    """``2 · (numel + 4 · ceil(numel/256))`` per large tensor; fp32 moments (``8 · numel``) for small ones."""
    total = 0.0
    for n in sizes:
        if n < BNB_MIN_8BIT_SIZE:
            total += 8 * n
        else:
            total += 2 * (n + 4 * math.ceil(n / BNB_BLOCK))
    return total


def sgd_bytes(sizes: Sequence[int], param_bytes: float) -> float:
    """Momentum buffer: ``numel · param_bytes``."""
    return sum(sizes) * param_bytes


#: optimizer -> its state bytes; same names as tunelab.train.optim.OPTIMIZERS.
OPTIMIZERS: Registry[Callable[[Sequence[int], float], float]] = Registry("optimizer", key="--optimizer")
OPTIMIZERS.register("adamw", adamw_bytes)
OPTIMIZERS.register("paged_adamw", adamw_bytes)
OPTIMIZERS.register("adamw_8bit", adamw_8bit_bytes)
OPTIMIZERS.register("paged_adamw_8bit", adamw_8bit_bytes)
OPTIMIZERS.register("sgd", sgd_bytes)


def optimizer_bytes(name: str, sizes: Sequence[int], param_bytes: float) -> float:
    """State bytes of optimizer ``name`` for trainable tensors of ``sizes`` stored at ``param_bytes``."""
    return OPTIMIZERS.get(name)(sizes, param_bytes)  # unknown: lists the valid ones and the closest
