"""What a training step keeps for backward, and where its resident memory goes.

A small model's training peak on CPU is not its weights (0.5 GiB for SmolLM2-135M in fp32) but
what the forward pass saves for backward (~2 KB per token per layer per adapted linear) and what
the C allocator keeps after freeing it. Four levers, applied by :func:`apply` from the
``training`` config, measured at the issue-13 size in bench/README.md (``bench/train_vs_trl.py``)
and phase by phase by ``bench/profile_step.py --memory``:

1. **LoRA dropout folded into** ``lora_A`` (``training.lean_activations``): a seed, from which
   backward redraws the mask, instead of two fp32 copies per adapted layer, same math
   (tunelab/train/lora_dropout.py); and
   the SwiGLU activation, product and LoRA ``down_proj`` input as one function that keeps the two
   gate inputs and recomputes the rest (tunelab/train/lean_mlp.py).
2. **Large blocks straight from the OS** (``training.map_large_blocks``, glibc only; tunelab's
   CLI normally runs on tcmalloc, which keeps the heap compact without it:
   tunelab/utils/allocator.py): glibc
   serves blocks under its dynamic mmap threshold (up to 32 MiB) from the heap, where freed
   activations interleaved with live ones cannot be returned; the resident set then stays at the
   step's worst fragmentation. Allocations of ``MMAP_THRESHOLD`` bytes or more are mapped and
   unmapped by the kernel instead, so resident memory follows the live tensors (as in
   bench/memory_train.py). Off by default: each new activation then costs a page fault per 4 KiB
   page, which on this VM made a step ~2x slower (bench/README.md; ``bench/alloc_faults.py``: 2.9x
   the heap per 25 MB allocate + multiply; with glibc's transparent-huge-page tunable, which only
   works when set before the process starts, 0.8x).
3. **Grouped-query attention without repeated keys** (``training.lean_activations``, CPU): with a
   mask (packed rows, padding), transformers repeats each key/value head for every query head it
   serves before SDPA, and SDPA saves the repeated copies; torch's CPU flash kernel takes the
   grouped heads directly (``enable_gqa``), which transformers uses when
   ``TRANSFORMERS_SDPA_FORCE_GQA=1`` (set here for CPU training; on CUDA a mask with ``enable_gqa``
   falls back to the math kernel, so it is left alone). SmolLM2: 9 query heads on 3 KV heads, so
   k and v keep 3 heads instead of 9 (-3 KB per token per layer in fp32).
4. **Selective activation checkpointing** (``training.checkpoint_fraction``): the first
   ``round(fraction x layers)`` decoder layers keep only their input and are recomputed in
   backward (Chen et al., 2016, "Training Deep Nets with Sublinear Memory Cost",
   arXiv:1604.06174; Korthikanti et al., 2022, arXiv:2205.05198 on recomputing a selected part);
   each checkpointed layer saves ~its share of the activations for ~1/3 of its step time.
   ``training.gradient_checkpointing=true`` is fraction 1. Recomputation replays the RNG state,
   so dropout masks are the same as in the first pass (torch.utils.checkpoint).

A run records the levers it applied and the malloc it ran on in ``memory.json``.

Checked by: tests/train/test_activations.py (same losses and gradients with and without each
lever, the number of checkpointed layers, saved bytes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass

from torch import nn

from tunelab.memory.training import checkpoint_fraction  # torch-free: the planner reads it too
from tunelab.train.lean_mlp import fuse_gated_mlps
from tunelab.train.lora_dropout import fold_lora_dropout

#: glibc ``mallopt`` parameter number of ``M_MMAP_THRESHOLD`` (malloc.h).
M_MMAP_THRESHOLD = -3
#: Blocks from 1 MiB up are mapped: activations (tokens x hidden x 4 B) are far larger, the many
#: small Python and autograd objects stay on the heap.
MMAP_THRESHOLD = 1 << 20


@dataclass(frozen=True)
class ActivationMemory:
    folded_dropouts: int
    fused_mlps: int
    checkpointed_layers: int
    layers: int
    mapped_large_blocks: bool
    grouped_kv: bool


def map_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Tell glibc to map blocks of ``threshold`` bytes or more (process-wide); False off glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


def _is_ckpt_layer(module: nn.Module) -> bool:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return isinstance(module, GradientCheckpointingLayer)


def checkpoint_first_layers(model: nn.Module, fraction: float) -> tuple[int, int]:
    """Keep gradient checkpointing on the first ``round(fraction x n)`` decoder layers only.

    The model must have had ``gradient_checkpointing_enable`` called (load_model does it when the
    fraction is above 0). Returns ``(checkpointed, n)``.
    """
    layers = [m for m in model.modules() if _is_ckpt_layer(m)]
    keep = round(fraction * len(layers))
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = bool(layer.gradient_checkpointing) and i < keep
    return sum(bool(layer.gradient_checkpointing) for layer in layers), len(layers)


def grouped_kv_in_sdpa(device: str) -> bool:
    """Let transformers pass grouped K/V heads to SDPA with a mask (CPU only; see the module docstring)."""
    if device != "cpu":
        return False
    os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")
    return os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "1"


def record(levers: ActivationMemory) -> dict:
    """What a run's ``memory.json`` says: the levers applied and the malloc the process runs on."""
    from dataclasses import asdict

    from tunelab.utils.allocator import loaded_allocator

    return {**asdict(levers), "malloc": loaded_allocator()}


def apply(model: nn.Module, args, adapter: str | None = None) -> ActivationMemory:
    """Apply the ``training`` config's activation-memory levers to a freshly loaded model."""
    lean = args.lean_activations
    folded = fold_lora_dropout(model) if lean else 0
    fused = fuse_gated_mlps(model) if lean else 0
    mapped = map_large_blocks() if args.map_large_blocks else False
    device = next(model.parameters()).device.type
    grouped = grouped_kv_in_sdpa(device) if lean else False
    checkpointed, layers = checkpoint_first_layers(model, checkpoint_fraction(args, adapter))
    return ActivationMemory(folded, fused, checkpointed, layers, mapped, grouped)
