"""Measure what autograd keeps for backward, by tensor storage (used by tests and the bench/memory_*.py scripts).

``saved_tensors_hooks`` sees every tensor an op saves; counting each storage once (and never
a parameter's own storage) gives the bytes the forward pass leaves alive for backward. Saved
16-bit casts of weights (autocast) are told apart by shape: a 2-D tensor shaped like a
parameter (or its transpose) whose first dimension is not the batch or token count.
"""

from __future__ import annotations

from contextlib import nullcontext
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


def train_step(model, optimizer, ids, autocast_device: str | None = None) -> None:
    """One causal-LM step as the planner models it: fp32 shifted cross-entropy over the whole
    vocabulary, backward, optimizer step, gradients set to None; bf16 autocast on ``autocast_device``."""
    cast = torch.autocast(autocast_device, dtype=torch.bfloat16) if autocast_device else nullcontext()
    with cast:
        logits = model(input_ids=ids).logits[:, -ids.shape[1] :, :]  # prompt tuning prepends virtual tokens
        shift = logits[:, :-1, :].float()
        loss = torch.nn.functional.cross_entropy(shift.reshape(-1, shift.size(-1)), ids[:, 1:].reshape(-1))
    del logits, shift
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
