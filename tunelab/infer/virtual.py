"""Prompt tuning and prefix tuning served unmerged: peft's virtual tokens under tunelab's KV cache.

These adapters cannot be merged into the weights (they learn inputs, not weight deltas), so chat
and serve run them as peft does. peft's ``forward`` is built for training and for its own
``generate``: prompt tuning prepends the learned embeddings on *every* call, and prefix tuning
replaces any cache passed in with the learned prefix, so neither can be called step by step on a
growing cache. What decoding needs is the state *after* the virtual tokens:

* prefix tuning (Li & Liang, 2021, arXiv:2101.00190): the learned keys/values are that state
  (``get_prompt`` returns them as a cache of ``num_virtual_tokens`` positions);
* prompt tuning (Lester et al., 2021, arXiv:2104.08691) and P-tuning: the learned embeddings are
  prefilled together with the first prompt tokens in one forward pass, as peft's ``generate`` does.

From then on the *base* model runs on that cache like any other model, with token ``i`` at
position ``num_virtual_tokens + i`` (as in training and in peft's ``generate``; greedy output is
tested equal to peft's ``generate``). When the adapter is disabled (serving the base model id)
there are no virtual tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tunelab.errors import ServeError

#: peft types whose learned state is a key/value prefix of every layer.
KV_PREFIX = {"PREFIX_TUNING"}
#: peft types whose learned state is embeddings prepended to the input.
EMBEDDING_PREFIX = {"PROMPT_TUNING", "P_TUNING"}


@dataclass(frozen=True)
class VirtualTokens:
    """The virtual tokens of the active prompt-learning adapter of ``peft_model``."""

    peft_model: Any
    kind: str  # "kv" | "embeddings"
    length: int

    @property
    def base(self):
        """The transformers model the cache is run through (peft's forward would re-add the prefix)."""
        return self.peft_model.get_base_model()

    def start_cache(self, empty_cache):
        """The cache to decode from: the learned prefix (kv), or ``empty_cache`` (filled by :meth:`prefill`)."""
        if self.kind == "kv":
            return self.peft_model.get_prompt(batch_size=1, max_cache_len=-1)
        return empty_cache

    def prefill_embeds(self, ids: torch.Tensor) -> torch.Tensor:
        """``(1, length + T, H)``: the learned embeddings followed by the embeddings of ``ids`` ``(1, T)``."""
        embeds = self.peft_model.word_embeddings(ids)
        prompts = self.peft_model.get_prompt(batch_size=1).to(embeds.dtype)
        return torch.cat((prompts, embeds), dim=1)


def virtual_tokens(model) -> VirtualTokens | None:
    """The active adapter's virtual tokens, or None (not peft, not prompt learning, adapter disabled)."""
    config = getattr(model, "active_peft_config", None) if hasattr(model, "peft_config") else None
    if config is None or not getattr(config, "is_prompt_learning", False):
        return None
    if getattr(model, "_adapters_disabled", False):  # inside disable_adapter(): the base model alone
        return None
    kind = str(getattr(config.peft_type, "value", config.peft_type))
    if kind in KV_PREFIX:
        return VirtualTokens(model, "kv", int(config.num_virtual_tokens))
    if kind in EMBEDDING_PREFIX:
        return VirtualTokens(model, "embeddings", int(config.num_virtual_tokens))
    raise ServeError(
        f"a {kind.lower()} adapter cannot be served: it needs per-request inputs besides the prompt.\n"
        "  fix: serve a LoRA, DoRA, prompt-tuning, prefix-tuning or LLaMA-Adapter adapter"
    )
