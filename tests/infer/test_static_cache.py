"""The static-cache and ``torch.compile`` decode paths give the dynamic cache's greedy tokens.

A ``StaticCache`` is preallocated per request (prompt + max_new_tokens rounded up to a bucket);
one-token steps may run through ``torch.compile``. Neither may change what is generated: greedy
tokens must equal the dynamic-cache loop's (and so transformers' ``generate``, tested in
``test_decode.py``), also under speculation, whose rejected drafts crop the static cache.
Compiling even tiny takes minutes on 2 loaded CPU cores, so that test is ``slow``.
"""

from __future__ import annotations

import pytest

from tunelab.infer import Generator, SamplingParams, Speculation


@pytest.mark.parametrize("max_new", [1, 40])
def test_static_cache_greedy_equals_the_dynamic_cache(lm, tiny_tokenizer, prompts, max_new):
    dynamic, static = Generator(lm, tiny_tokenizer), Generator(lm, tiny_tokenizer, static_cache=True)
    assert static.prefix_cache is None and static.static_cache
    for prompt in prompts:
        params = SamplingParams(max_new_tokens=max_new, repetition_penalty=1.2)
        assert static.generate(prompt, params).tokens == dynamic.generate(prompt, params).tokens


def test_static_cache_under_prompt_lookup_crops_rejected_drafts(lm, tiny_tokenizer, prompts):
    dynamic, static = Generator(lm, tiny_tokenizer), Generator(lm, tiny_tokenizer, static_cache=True)
    spec = Speculation("prompt_lookup", num_tokens=4, max_ngram=2)
    for prompt in prompts:
        result = static.generate(prompt, SamplingParams(max_new_tokens=24), speculation=spec)
        assert result.timings.drafted > result.timings.accepted  # some drafts were rejected and cropped
        assert result.tokens == dynamic.generate(prompt, SamplingParams(max_new_tokens=24)).tokens


def test_seeded_sampling_is_unchanged_by_the_static_cache(lm, tiny_tokenizer, prompts):
    params = SamplingParams(max_new_tokens=16, temperature=0.9, top_p=0.9, seed=4)
    dynamic, static = Generator(lm, tiny_tokenizer), Generator(lm, tiny_tokenizer, static_cache=True)
    assert static.generate(prompts[0], params).tokens == dynamic.generate(prompts[0], params).tokens


@pytest.mark.slow
def test_compiled_decode_step_greedy_equals_the_dynamic_cache(lm, tiny_tokenizer, prompts):
    dynamic, compiled = Generator(lm, tiny_tokenizer), Generator(lm, tiny_tokenizer, compile=True)
    assert compiled.step_forward is not None and compiled.static_cache
    for prompt in prompts:  # same bucket: one compilation serves all three
        params = SamplingParams(max_new_tokens=30)
        assert compiled.generate(prompt, params).tokens == dynamic.generate(prompt, params).tokens
