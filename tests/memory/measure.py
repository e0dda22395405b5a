"""Measure what autograd keeps for backward, by tensor storage (used by tests and bench/memory_train.py).

``saved_tensors_hooks`` sees every tensor an op saves; counting each storage once (and never
a parameter's own storage) gives the bytes the forward pass leaves alive for backward. Saved
16-bit casts of weights (autocast) are told apart by shape: a 2-D tensor shaped like a
parameter (or its transpose) whose first dimension is not the batch or token count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.graph import saved_tensors_hooks


@dataclass
class Saved:
    activations: int
    weight_copies: int
    logits: int


def saved_bytes(model, batch: dict, *, autocast: bool, vocab: int) -> Saved:
    """Bytes saved by one forward of ``model(**batch)`` under bf16 autocast (or not)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    shapes = {tuple(p.shape) for p in model.parameters() if p.ndim == 2}
    shapes |= {s[::-1] for s in shapes}
    rows, tokens = batch["input_ids"].shape[0], batch["input_ids"].numel()
    seen: dict[int, tuple[int, str]] = {}

    def pack(t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen:
            kind = "act"
            if t.ndim == 2 and tuple(t.shape) in shapes and t.shape[0] not in (rows, tokens):
                kind = "copy"
            elif t.shape and t.shape[-1] == vocab:
                kind = "logits"
            seen[ptr] = (storage.nbytes(), kind)
        return t

    with saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(**batch)
    del out
    total = {"act": 0, "copy": 0, "logits": 0}
    for nbytes, kind in seen.values():
        total[kind] += nbytes
    return Saved(total["act"], total["copy"], total["logits"])
