"""KV caches: a model's running state over a token sequence, and the context (prefix) cache.

:class:`KVState` owns one ``DynamicCache`` and the exact token list it covers. Asking it for
the logits of a longer sequence reuses the longest common prefix (cropping anything stale,
e.g. rejected draft tokens) and runs the model on the rest only. The same rule serves plain
decoding (one new token per call), speculative verification (the pending token + k drafts),
the draft model (which catches up on accepted tokens by itself) and context caching.

:class:`PrefixCache` is a bounded LRU of finished states keyed by their token prefix. A new
request reuses the entry that shares the longest prefix with its prompt (a system prompt,
earlier conversation turns, a shared document) on a *copy*, so a stored entry is never
mutated and outputs do not depend on whether the cache was hit (tested).

A :class:`KVState` can instead hold a preallocated ``StaticCache`` (``static_len`` positions):
fixed shapes let ``torch.compile`` build one graph for the one-token decode step (the prefill
and multi-token verify passes stay eager). Whether that pays is measured in ``bench/generate.py``.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tunelab.infer.virtual import virtual_tokens


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    ta = torch.as_tensor(a[:n])
    tb = torch.as_tensor(b[:n])
    diff = (ta != tb).nonzero()
    return n if diff.numel() == 0 else int(diff[0, 0])


def cache_kwarg(model) -> str:
    """Name of the KV-cache argument of ``model.forward``: ``cache`` since transformers 5.2x,
    ``past_key_values`` before (peft wrappers forward it to the base model unchanged)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def copy_cache(cache, keep: int):
    """A copy of ``cache`` cropped to its first ``keep`` positions; the original is untouched."""
    clone = copy.deepcopy(cache)
    extra = clone.get_seq_length() - keep
    if extra > 0:
        clone.crop(-extra)
    return clone


class KVState:
    """A model plus the KV cache of a token sequence (or no cache: full recompute each call).

    Args:
        model: a causal LM (plain or peft-wrapped) accepting ``past_key_values``.
        use_cache: False recomputes the whole sequence every call (the benchmark's baseline).
        cache: an existing ``DynamicCache`` covering ``tokens`` (from the context cache).
        tokens: the tokens ``cache`` covers.
        static_len: > 0: start from a ``StaticCache`` of this many positions instead of a ``DynamicCache``.
        step_forward: the callable run for one-token steps (a ``torch.compile``'d model); others run ``model``.
    """

    def __init__(self, model, *, use_cache: bool = True, cache=None, tokens: Sequence[int] = (), static_len: int = 0,
                 step_forward: Callable | None = None):
        self.model = model
        self.static_len = static_len
        self.step_forward = step_forward
        self.use_cache = use_cache
        self.cache = cache
        self.tokens: list[int] = list(tokens) if cache is not None else []
        self.device = next(model.parameters()).device
        self.forward_passes = 0
        self._cache_kwarg = cache_kwarg(model)
        # Prompt/prefix tuning: the cache starts after the adapter's virtual tokens (tunelab.infer.virtual).
        self.virtual = virtual_tokens(model)
        self.offset = self.virtual.length if self.virtual is not None else 0

    def _new_cache(self):
        from transformers import DynamicCache, StaticCache

        if self.static_len > 0 and self.virtual is None:
            return StaticCache(config=self.model.config, max_cache_len=self.static_len)
        cache = DynamicCache(config=getattr(self.model, "config", None))
        return self.virtual.start_cache(cache) if self.virtual is not None else cache

    @torch.inference_mode()
    def logits(self, tokens: Sequence[int], last: int = 1) -> Tensor:
        """Float logits ``(last, V)`` predicting the token after each of the final ``last`` positions.

        Reuses the cached prefix (cropped to at most ``len(tokens) - last`` so every asked-for
        position is computed) and feeds only the remaining tokens.
        """
        if not 1 <= last <= len(tokens):
            raise ValueError(f"need 1 <= last <= len(tokens), got last={last}, len={len(tokens)}")
        self.forward_passes += 1
        if not self.use_cache:  # peft's own forward adds any virtual tokens on every call
            ids = torch.tensor([list(tokens)], device=self.device)
            out = self.model(input_ids=ids, use_cache=False, logits_to_keep=last)
            return out.logits[0, -last:].float()
        keep = min(common_prefix_len(self.tokens, tokens), len(tokens) - last)
        if self.cache is None:
            self.cache, keep = self._new_cache(), 0
        elif (length := int(self.cache.get_seq_length())) > self.offset + keep:  # a StaticCache's is a tensor
            self.cache.crop(self.offset + keep - length)
        new = torch.tensor([list(tokens[keep:])], device=self.device)
        kwargs = {self._cache_kwarg: self.cache, "use_cache": True, "logits_to_keep": last}
        if self.virtual is None:
            step = self.step_forward is not None and new.shape[1] == 1
            out = (self.step_forward if step else self.model)(input_ids=new, **kwargs)  # updates self.cache
        elif self.cache.get_seq_length() == 0:  # prompt tuning: virtual embeddings + tokens in one prefill
            out = self.virtual.base(inputs_embeds=self.virtual.prefill_embeds(new), **kwargs)
        else:  # the cache already holds the virtual tokens: the base model continues it
            out = self.virtual.base(input_ids=new, **kwargs)
        self.tokens = list(tokens)
        return out.logits[0, -last:].float()


@dataclass
class PrefixHit:
    """A copy of a cached state and how many prompt tokens it covers."""

    cache: object
    tokens: list[int]

    @property
    def length(self) -> int:
        return len(self.tokens)


class PrefixCache:
    """Bounded LRU of KV caches keyed by ``(namespace, token prefix)``.

    ``namespace`` separates models/adapters (the same tokens give different KV under another
    adapter). Bounded by entry count and by total cached tokens; the least recently used
    entries go first. Thread-safe.

    Args:
        max_entries: most states kept.
        max_tokens: most tokens summed over all states (a proxy for memory).
        min_tokens: shorter matches are not worth a copy and are ignored.
    """

    def __init__(self, max_entries: int = 16, max_tokens: int = 65536, min_tokens: int = 8):
        self.max_entries = max_entries
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self._entries: OrderedDict[tuple[Hashable, tuple[int, ...]], object] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, namespace: Hashable, prompt: Sequence[int]) -> PrefixHit | None:
        """The longest cached prefix of ``prompt`` (at most ``len(prompt) - 1`` tokens, so the
        caller still computes the logits of the last position), copied and cropped."""
        with self._lock:
            best_key, best_len = None, 0
            for key in self._entries:
                if key[0] != namespace:
                    continue
                n = min(common_prefix_len(key[1], prompt), len(prompt) - 1)
                if n > best_len:
                    best_key, best_len = key, n
            if best_key is None or best_len < self.min_tokens:
                self.misses += 1
                return None
            self._entries.move_to_end(best_key)
            self.hits += 1
            stored = self._entries[best_key]
            offset = stored.get_seq_length() - len(best_key[1])  # virtual tokens ahead of the prompt
            return PrefixHit(copy_cache(stored, offset + best_len), list(prompt[:best_len]))

    def store(self, namespace: Hashable, tokens: Sequence[int], cache) -> None:
        """Keep ``cache`` (covering ``tokens``); the caller must not use ``cache`` afterwards."""
        if cache is None or len(tokens) < self.min_tokens or len(tokens) > self.max_tokens:
            return
        key = (namespace, tuple(tokens))
        with self._lock:
            # An entry that is a prefix of the new one adds nothing: the new one answers it too.
            for old in [k for k in self._entries if k[0] == namespace and tokens[: len(k[1])] == list(k[1])]:
                del self._entries[old]
            self._entries[key] = cache
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries or self._total_tokens() > self.max_tokens:
                self._entries.popitem(last=False)

    def _total_tokens(self) -> int:
        return sum(len(k[1]) for k in self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
