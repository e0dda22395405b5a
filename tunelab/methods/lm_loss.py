"""Next-token log-probs without the (tokens x vocabulary) logits: the LM head and the softmax
in chunks, recomputed in backward.

Why: with a 49k-152k vocabulary the output head dominates a small model's training memory.
The plain path (``model(...).logits`` then ``cross_entropy``) keeps the logits, an fp32 copy,
the log-softmax and, in backward, its gradient: ~12-16 bytes x tokens x V, 2.25 GiB at 12
bytes for 8 x 512 tokens of SmolLM2 (V = 49,152) where the whole 135M model is 0.5 GiB. Two
cuts here:

1. only positions whose next token is trained (SFT answer tokens, DPO completion tokens) go
   through the head at all: prompt and padding rows are dropped before the matmul;
2. those rows go through ``lm_head`` + log-softmax in chunks of ``CHUNK_ELEMENTS`` logits by a
   custom autograd function that saves only the inputs and one fp32 log-sum-exp per row, and
   recomputes each chunk's logits in backward (the idea of Liger Kernel's fused linear cross
   entropy, Hsu et al., 2024, arXiv:2410.10989, and of Cut Cross-Entropy, Wijmans et al., 2024,
   arXiv:2411.09009, in plain PyTorch). Memory for the head drops from O(tokens x V) to
   O(chunk x V); the FLOPs are one extra head matmul per trained token.

The model is still called through its own ``forward`` (so peft wrappers, DDP and gradient
checkpointing apply): its output head is swapped for ``nn.Identity`` for the call, so
``.logits`` holds the last hidden states, and the real head's weight is applied here.
Architectures that post-process logits (soft-capping, logit scaling) and heads that are not a
plain ``nn.Linear`` (a LoRA-wrapped or 4-bit head) take the plain path.

Packed rows (``position_ids`` restarting per example) get their block-diagonal causal mask as one
float tensor (:func:`packed_attention_mask`) on CPU SDPA, so all layers save the same one.

Checked by: tests/train/test_lm_loss.py (loss and every gradient equal to the plain path within
1e-5 on ``tiny``: LoRA, full fine-tuning with the tied head, DPO log-probs, packed rows; the packed
mask by hand and saved once for all layers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Logits computed at once (rows x V): 2^25 fp32 = 128 MiB per chunk, plus its softmax in backward.
CHUNK_ELEMENTS = 2**25
#: Config fields of architectures whose logits are not just ``lm_head(hidden)``.
LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _unwrapped(model: nn.Module) -> nn.Module:
    """The transformers causal LM inside DDP / peft wrappers."""
    while hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
        model = model.get_base_model()
    return model


def _plain_head(lm: nn.Module) -> tuple[str, nn.Linear] | None:
    """``(attribute, head)`` when the head is a direct ``nn.Linear`` child and nothing
    post-processes its output; None otherwise (the plain path is used)."""
    config = getattr(lm, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if any(getattr(c, name, None) not in (None, 1, 1.0) for c in (config, text) for name in LOGIT_POSTPROCESSING):
        return None
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if type(head) is not nn.Linear:  # LoRA-wrapped, 4-bit or custom heads compute more than x @ W.T
        return None
    for name, child in lm.named_children():
        if child is head:
            return name, head
    return None


@contextlib.contextmanager
def hidden_states_as_logits(model: nn.Module) -> Iterator[nn.Linear | None]:
    """Within the block, ``model(...).logits`` are the last hidden states; yields the real head.

    Yields None (and changes nothing) when the head cannot be applied separately.
    """
    lm = _unwrapped(model)
    found = _plain_head(lm)
    if found is None:
        yield None
        return
    name, head = found
    setattr(lm, name, nn.Identity())
    try:
        yield head
    finally:
        setattr(lm, name, head)


class _ChunkedHeadLogps(torch.autograd.Function):
    """``log_softmax(x @ W.T + b)[target]`` per row, in chunks; backward recomputes the chunks."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, dtype: torch.dtype) -> Tensor:
        rows = max(1, CHUNK_ELEMENTS // weight.shape[0])
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
        lse = torch.empty_like(out)
        for i in range(0, x.shape[0], rows):
            logits = F.linear(x[i : i + rows].to(dtype), w, b).float()
            lse[i : i + rows] = torch.logsumexp(logits, dim=-1)
            out[i : i + rows] = logits.gather(1, target[i : i + rows, None]).squeeze(1) - lse[i : i + rows]
        ctx.save_for_backward(x, weight, bias, target, lse)
        ctx.dtype, ctx.rows = dtype, rows
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight, bias, target, lse = ctx.saved_tensors
        dtype, rows = ctx.dtype, ctx.rows
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        for i in range(0, x.shape[0], rows):
            xs = x[i : i + rows].to(dtype)
            # d logp[target] / d logits = onehot(target) - softmax(logits)
            grad_logits = torch.exp(F.linear(xs, w, b).float() - lse[i : i + rows, None]).neg_()
            grad_logits.scatter_add_(1, target[i : i + rows, None], torch.ones_like(lse[i : i + rows, None]))
            grad_logits.mul_(grad_out[i : i + rows, None])
            g = grad_logits.to(dtype)
            if need_x:
                grad_x[i : i + rows] = (g @ w).to(x.dtype)
            if need_w:
                grad_w.addmm_(g.t().float(), xs.float())
            if need_b:
                grad_b += grad_logits.sum(0)
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
        grad_b = None if grad_b is None else grad_b.to(bias.dtype)
        return grad_x, grad_w, grad_b, None, None


def head_logps(hidden: Tensor, head: nn.Linear, target: Tensor) -> Tensor:
    """(N,) log-probs of ``target`` (N,) given (N, H) hidden states, without keeping (N, V) logits.

    The head's matmuls run in the autocast dtype when autocast is on (as ``head(hidden)`` would),
    the log-softmax in fp32.
    """
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else head.weight.dtype
    with torch.autocast(device, enabled=False):
        return _ChunkedHeadLogps.apply(hidden, head.weight, head.bias, target, dtype)


def packed_attention_mask(position_ids: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, 1, T, T) additive mask of packed rows: 0 where key ``j <= i`` lies in query ``i``'s example,
    the dtype's minimum elsewhere. Examples start where ``position_ids`` does not step by 1, as in
    transformers' ``find_packed_sequence_indices``.

    Why: given ``position_ids`` alone, transformers builds a boolean mask that torch's CPU SDPA
    kernel converts to float in every layer and saves for backward: one ``T x T`` fp32 copy per
    layer and row (8 MiB per layer at 8 x 512). A float mask is used as is and saved by reference,
    once for all layers.
    """
    first = position_ids[:, :1] - 1
    example = (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1)  # (B, T)
    width = position_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=position_ids.device).tril()
    allowed = causal & (example[:, :, None] == example[:, None, :])
    mask = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def _shared_float_mask(model: nn.Module, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """``inputs`` with a float packed mask for SDPA on CPU without autocast (else unchanged)."""
    pos = inputs.get("position_ids")
    lm = _unwrapped(model)
    config = getattr(lm, "config", None)
    if pos is None or inputs.get("attention_mask") is not None or pos.device.type != "cpu" or pos.ndim != 2:
        return inputs
    if getattr(config, "_attn_implementation", None) != "sdpa" or torch.is_autocast_enabled("cpu"):
        return inputs
    dtype = next(lm.parameters()).dtype
    if dtype != torch.float32:
        return inputs
    return {**inputs, "attention_mask": packed_attention_mask(pos, dtype)}


def trained_outputs(model: nn.Module, inputs: dict[str, Tensor], keep: Tensor) -> tuple[Tensor, nn.Linear | None]:
    """The model's outputs at the (B, T-1) ``keep`` positions only, and the head still to apply.

    Returns ``(hidden, head)``: (N, H) last hidden states and the real output head, or, where the
    head cannot be applied separately, ``(logits, None)`` with (N, V) real logits.
    """
    width = keep.shape[1] + 1
    inputs = _shared_float_mask(model, inputs)
    with hidden_states_as_logits(model) as head:
        out = model(**inputs, use_cache=False).logits[:, -width:, :]  # prompt tuning prepends virtual tokens
    return out[:, :-1][keep], head


def next_token_logps(model: nn.Module, inputs: dict[str, Tensor], targets: Tensor) -> Tensor:
    """(B, T-1) log-prob of token t+1 at position t where ``targets[:, 1:] != -100``, 0 elsewhere.

    Args:
        model: a causal LM (peft/DDP-wrapped or not).
        inputs: its forward's keyword arguments (input_ids (B, T), masks, position_ids).
        targets: (B, T) token ids to score, -100 where no log-prob is needed.
    """
    shifted = targets[:, 1:]
    keep = shifted != -100
    selected, head = trained_outputs(model, inputs, keep)  # only the scored positions reach the head
    logps = torch.zeros(shifted.shape, dtype=torch.float32, device=selected.device)
    if head is None:  # ``selected`` are real logits: the plain path
        return logps.masked_scatter(keep, -F.cross_entropy(selected.float(), shifted[keep], reduction="none"))
    return logps.masked_scatter(keep, head_logps(selected, head, shifted[keep]))
