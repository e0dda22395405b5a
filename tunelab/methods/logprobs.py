"""Shared tensor plumbing of the alignment methods: padding, completion log-probs, the reference.

The reference policy of DPO, KTO and PPO is, with a peft adapter, the *same* model with the
adapter disabled (``with model.disable_adapter():``): no second copy of the base weights is
ever held. With full fine-tuning a frozen copy is loaded once. Either way the reference runs
under ``torch.no_grad()`` in eval mode (no dropout), so its log-probs are those of the base;
PPO's gradient pass runs under :func:`dropout_off`, so it matches the eval-mode rollout pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunelab.errors import ConfigError

#: Adapter types whose trained weights live inside the base modules (LoRA-style), so the
#: decoder body can be called directly and ``disable_adapter`` yields the base model.
BODY_ADAPTERS = {"lora", "qlora", "dora", "full", "freeze"}


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad token lists into ``(ids (B, T), attention_mask (B, T))``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def prompt_completion_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int
) -> dict[str, Tensor]:
    """Concatenate prompt + completion rows, right-padded, with a mask of completion tokens.

    Returns:
        ``input_ids`` (B, T), ``attention_mask`` (B, T), ``completion_mask`` (B, T) = 1 on
        completion tokens only.
    """
    rows = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    ids, mask = pad_right(rows, pad_id)
    comp = torch.zeros_like(mask)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        comp[i, len(p) : len(p) + len(c)] = 1
    return {"input_ids": ids, "attention_mask": mask, "completion_mask": comp}


def packed_prompt_completion_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int, max_length: int
) -> dict[str, Tensor]:
    """The sequences of :func:`prompt_completion_batch`, packed into rows of ``max_length`` tokens.

    Padding-free (Krell et al., 2021, arXiv:2107.02027): preference batches mix completions of a
    few and of hundreds of tokens, so right-padding every sequence to the longest wastes about
    half the compute. Packed sequences keep their tokens contiguous with ``position_ids``
    restarting at 0 (transformers then masks attention block-diagonally, as for packed SFT).

    Returns:
        ``input_ids``, ``position_ids``, ``completion_mask`` (R, W) and ``sequence_index`` (R, W):
        which input sequence each token belongs to (-1 on padding).
    """
    from tunelab.data.tokenize import pack_bins

    seqs = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    bins = pack_bins([len(s) for s in seqs], max(max_length, *(len(s) for s in seqs)))
    width = max(sum(len(seqs[i]) for i in members) for members in bins)
    ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    positions = torch.zeros_like(ids)
    comp = torch.zeros_like(ids)
    owner = torch.full_like(ids, -1)
    for r, members in enumerate(bins):
        at = 0
        for i in sorted(members):
            n = len(seqs[i])
            ids[r, at : at + n] = torch.tensor(seqs[i], dtype=torch.long)
            positions[r, at : at + n] = torch.arange(n)
            comp[r, at + len(prompts[i]) : at + n] = 1
            owner[r, at : at + n] = i
            at += n
        positions[r, at:] = torch.arange(width - at)  # the padded tail: its own segment, never scored
    return {"input_ids": ids, "position_ids": positions, "completion_mask": comp, "sequence_index": owner}


def token_logps(logits: Tensor, input_ids: Tensor) -> Tensor:
    """Log-prob of each next token: (B, T, V) logits, (B, T) ids -> (B, T-1) for tokens 1..T-1."""
    shift = logits[:, :-1, :].float()
    target = input_ids[:, 1:]
    nll = F.cross_entropy(shift.reshape(-1, shift.size(-1)), target.reshape(-1), reduction="none")
    return -nll.view(target.shape)


def completion_logps(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Summed log-probs of the completion tokens and their count, both (B,).

    Prompt-learning adapters prepend virtual tokens to the logits; the last T positions are kept.
    A batch from :func:`packed_prompt_completion_batch` gives one entry per packed sequence.
    """
    from tunelab.methods.lm_loss import next_token_logps

    ids = batch["input_ids"]
    # Only completion tokens reach the LM head, in chunks recomputed in backward (lm_loss.py).
    targets = ids.masked_fill(batch["completion_mask"] == 0, -100)
    if "sequence_index" in batch:  # packed rows: sum each sequence's tokens by owner
        per_token = next_token_logps(model, {"input_ids": ids, "position_ids": batch["position_ids"]}, targets)
        scored = batch["completion_mask"][:, 1:].bool()
        owner = batch["sequence_index"][:, 1:][scored]
        n = int(batch["sequence_index"].max()) + 1
        sums = per_token.new_zeros(n).index_add(0, owner, per_token[scored])
        return sums, per_token.new_zeros(n).index_add(0, owner, torch.ones_like(per_token[scored]))
    per_token = next_token_logps(model, {"input_ids": ids, "attention_mask": batch["attention_mask"]}, targets)
    target_mask = batch["completion_mask"][:, 1:].to(per_token.dtype)
    return (per_token * target_mask).sum(-1), target_mask.sum(-1)


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def reference_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The adapter-off base of a peft ``model``, without gradients and in eval mode (no dropout)."""
    if not is_peft(model):
        raise ConfigError("the shared-weights reference needs a peft adapter (adapter.type lora/qlora/dora)")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), model.disable_adapter():
            yield model
    finally:
        model.train(was_training)


def _drops(module: nn.Module) -> bool:
    """Modules whose train mode means dropout: ``nn.Dropout`` (LoRA's included) and transformers
    attention, which reads ``self.training`` to apply ``attention_dropout``."""
    return isinstance(module, nn.modules.dropout._DropoutNd) or hasattr(module, "attention_dropout")


@contextlib.contextmanager
def dropout_off(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` without dropout but with gradients, for a log-prob pass that is compared with
    an eval-mode one (PPO's new vs old log-probs: with dropout the first ratio would not be 1).

    Only the dropout-carrying modules leave train mode: ``model.eval()`` would also turn off
    gradient checkpointing, which transformers applies only to layers in train mode.
    """
    switched = [m for m in model.modules() if m.training and _drops(m)]
    for m in switched:
        m.training = False
    try:
        yield model
    finally:
        for m in switched:
            m.training = True


def base_causal_lm(model: nn.Module) -> nn.Module:
    """The transformers causal LM under a peft wrapper (or the model itself)."""
    return model.get_base_model() if is_peft(model) else model


def hidden_and_logits(
    model: nn.Module, ids: Tensor, mask: Tensor, want_logits: bool = True, position_ids: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Last hidden states (B, T, H) of the decoder body and, if asked, the LM logits (B, T, V).

    Calls the decoder body directly so a scalar head (reward, value) and the LM head share one
    forward pass; LoRA weights live inside the body's linear layers, so they apply.
    """
    lm = base_causal_lm(model)
    body = lm.get_decoder()
    hidden = body(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False).last_hidden_state
    logits = lm.get_output_embeddings()(hidden) if want_logits else None
    return hidden, logits


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last non-pad token of each right-padded row: (B, T) mask -> (B,)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * mask).argmax(dim=1)


def check_body_adapter(adapter_type: str, method: str) -> None:
    if adapter_type not in BODY_ADAPTERS:
        raise ConfigError(
            f"adapter.type={adapter_type} is not supported by method={method} (it needs a scalar head on the "
            f"decoder body).\n  fix: use one of {', '.join(sorted(BODY_ADAPTERS))}"
        )
