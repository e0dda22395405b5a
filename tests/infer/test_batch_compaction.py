"""generate_batch drops a finished row from the batch: the others still compute what they compute alone."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from tunelab.infer import Generator, SamplingParams, generate_batch
from tunelab.infer import batch as batch_module
from tunelab.infer.cache import cache_kwarg


@pytest.fixture()
def prompts():
    """Seeded random prompts of different lengths: tiny's answers to them differ (to chat prompts it
    answers newlines only)."""
    rng = random.Random(3)
    return [[rng.randrange(10, 500) for _ in range(n)] for n in (5, 9, 3, 12, 7)]


def stops_at_different_steps(lm, tokenizer, prompts, params) -> tuple[str, ...]:
    """A stop string per prompt, cut at a different offset of that prompt's own answer alone."""
    gen = Generator(lm, tokenizer)
    stops = []
    for k, prompt in enumerate(prompts[:3]):
        one = replace(params, seed=None if params.seed is None else params.seed + k)
        text = gen.generate(prompt, one).text
        stops.append(text[2 + 3 * k : 5 + 3 * k])
    return tuple(s for s in stops if s)


@pytest.mark.parametrize("sampled", [False, True])
def test_rows_leaving_the_batch_do_not_change_the_others(lm, tiny_tokenizer, prompts, sampled, monkeypatch):
    params = SamplingParams(
        max_new_tokens=12, temperature=0.9 if sampled else 0.0, top_k=50, seed=5 if sampled else None
    )
    params = replace(params, stop=stops_at_different_steps(lm, tiny_tokenizer, prompts, params))
    batch_sizes = []
    real_forward = lm.forward

    def counting_forward(*args, **kwargs):
        batch_sizes.append(kwargs["input_ids"].shape[0])
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(lm, "forward", counting_forward)
    batched = generate_batch(lm, tiny_tokenizer, prompts, params)
    monkeypatch.undo()
    gen = Generator(lm, tiny_tokenizer)
    for i, (row, prompt) in enumerate(zip(batched, prompts, strict=True)):
        one = replace(params, seed=None if params.seed is None else params.seed + i)
        alone = gen.generate(prompt, one)
        assert (row.tokens, row.text, row.finish_reason) == (alone.tokens, alone.text, alone.finish_reason)
    lengths = sorted(len(r.tokens) for r in batched)
    assert lengths[0] < lengths[-1]  # rows did finish at different steps...
    # ...and each forward after the prefill ran only the rows still generating at that step
    assert batch_sizes[0] == len(prompts)
    assert batch_sizes[1:] == [sum(1 for n in lengths if n > step) for step in range(1, lengths[-1])]
    assert sum(batch_sizes[1:]) == sum(lengths) - len(prompts)


def test_batch_select_keeps_the_cache_rows_of_the_kept_prompts(lm, tiny_tokenizer, prompts):
    """The cache method the compaction relies on keeps exactly the selected batch rows."""
    from transformers import DynamicCache

    ids, mask = batch_module.left_pad(prompts[:3], tiny_tokenizer.pad_token_id, "cpu")
    cache = DynamicCache(config=lm.config)
    with torch.no_grad():
        lm(input_ids=ids, attention_mask=mask, use_cache=True, **{cache_kwarg(lm): cache})
    keys = [layer.keys.clone() for layer in cache.layers]
    cache.batch_select_indices(torch.tensor([0, 2]))
    for before, layer in zip(keys, cache.layers, strict=True):
        assert torch.equal(layer.keys, before[[0, 2]])
