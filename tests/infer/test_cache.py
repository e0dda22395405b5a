"""Context cache: longest-prefix reuse, LRU bounds, no mutation, identical outputs."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from tunelab.infer import Generator, PrefixCache, SamplingParams
from tunelab.infer.cache import KVState, common_prefix_len

SYSTEM = "You are a careful assistant. Answer the question about the shared document in one short line."


def fake_cache(n: int) -> DynamicCache:
    cache = DynamicCache()
    cache.update(torch.arange(n, dtype=torch.float).view(1, 1, n, 1), torch.zeros(1, 1, n, 1), 0)
    return cache


def test_common_prefix_len():
    assert common_prefix_len([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len([1, 2], [1, 2]) == 2


def test_lookup_takes_longest_prefix_and_leaves_one_token():
    cache = PrefixCache(min_tokens=2)
    cache.store("m", list(range(10)), fake_cache(10))
    cache.store("m", [0, 1, 2, 7, 7, 7], fake_cache(6))
    hit = cache.lookup("m", list(range(5)) + [9])
    assert hit.tokens == [0, 1, 2, 3, 4] and hit.cache.get_seq_length() == 5
    full = cache.lookup("m", list(range(10)))  # whole prompt cached: keep the last one to compute
    assert full.length == 9
    assert cache.lookup("other-adapter", list(range(10))) is None


def test_reuse_never_mutates_the_stored_entry():
    cache = PrefixCache(min_tokens=2)
    stored = fake_cache(8)
    before = stored.layers[0].keys.clone()
    cache.store("m", list(range(8)), stored)
    hit = cache.lookup("m", [0, 1, 2, 3, 99])
    hit.cache.update(torch.full((1, 1, 3, 1), -1.0), torch.zeros(1, 1, 3, 1), 0)
    hit.cache.layers[0].keys.mul_(0)
    assert torch.equal(stored.layers[0].keys, before)


def test_lru_bounds_entries_and_tokens():
    cache = PrefixCache(max_entries=2, max_tokens=25, min_tokens=2)
    for start in (100, 200, 300):
        cache.store("m", list(range(start, start + 10)), fake_cache(10))
    assert len(cache) == 2 and cache.lookup("m", list(range(100, 105))) is None
    cache.store("m", list(range(400, 420)), fake_cache(20))  # 20 + 10 > 25: the oldest goes
    assert len(cache) == 1


def test_outputs_identical_with_and_without_context_cache(lm, tiny_tokenizer, encode_chat):
    questions = ["what is the title", "who wrote it", "when was it written"]
    plain = Generator(lm, tiny_tokenizer)
    cached = Generator(lm, tiny_tokenizer, prefix_cache=PrefixCache(min_tokens=4))
    params = SamplingParams(max_new_tokens=6)
    hits = []
    for q in questions:
        prompt = encode_chat(q, system=SYSTEM)
        ref = plain.generate(prompt, params)
        out = cached.generate(prompt, params)
        hf = lm.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert out.tokens == ref.tokens == hf[0, len(prompt) :].tolist()
        hits.append(out.timings.cached_prompt_tokens)
    system_len = common_prefix_len(encode_chat("a", SYSTEM), encode_chat("b", SYSTEM))
    assert hits[0] == 0 and all(h >= system_len - 1 for h in hits[1:]) and system_len > 20


def test_kvstate_recomputes_after_crop(lm):
    """Asking for a sequence that diverges from the cached one crops and recomputes exactly."""
    state = KVState(lm)
    a = state.logits([5, 6, 7, 8])
    state.logits([5, 6, 7, 8, 9, 10])
    again = state.logits([5, 6, 7, 8])  # crops to 3, recomputes position 3
    fresh = KVState(lm, use_cache=False).logits([5, 6, 7, 8])
    assert torch.allclose(a, again, atol=1e-5) and torch.allclose(a, fresh, atol=1e-5)
