"""The decode loop against transformers' generate: greedy, seeded sampling, stops, streaming."""

from __future__ import annotations

import pytest
import torch

from tunelab.errors import ServeError
from tunelab.infer import GenerationResult, Generator, SamplingParams, Speculation, generate_batch
from tunelab.infer.stream import REPLACEMENT, TextAssembler

N = 8


def hf_generate(lm, prompt, **kwargs) -> list[int]:
    out = lm.generate(torch.tensor([prompt]), max_new_tokens=N, pad_token_id=lm.config.pad_token_id, **kwargs)
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_equals_transformers_generate(lm, tiny_tokenizer, prompts, use_cache):
    gen = Generator(lm, tiny_tokenizer, use_cache=use_cache)
    for prompt in prompts[:1]:
        result = gen.generate(prompt, SamplingParams(max_new_tokens=N))
        assert result.tokens == hf_generate(lm, prompt, do_sample=False)
        assert result.timings.forward_passes == len(result.tokens)
        assert result.finish_reason == "length"
        assert 0 < result.timings.time_to_first_token <= result.timings.total


def test_seeded_sampling_equals_transformers_sampling(lm, tiny_tokenizer, prompts):
    """Same processors, same draws: our seeded private RNG reproduces generate(do_sample=True)."""
    params = SamplingParams(max_new_tokens=N, temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.2, seed=11)
    ours = Generator(lm, tiny_tokenizer).generate(prompts[0], params).tokens
    torch.manual_seed(11)
    theirs = hf_generate(lm, prompts[0], do_sample=True, temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.2)
    assert ours == theirs
    again = Generator(lm, tiny_tokenizer).generate(prompts[0], params).tokens
    other = Generator(lm, tiny_tokenizer).generate(prompts[0], SamplingParams(**{**params.__dict__, "seed": 12}))
    assert ours == again and ours != other.tokens


def test_eos_stops_with_reason_stop(lm, tiny_tokenizer, prompts):
    """Declare a token the greedy run produces as an extra EOS: generation ends right after it."""
    gen = Generator(lm, tiny_tokenizer)
    greedy = hf_generate(lm, prompts[1], do_sample=False)
    j = max(greedy.index(t) for t in set(greedy))  # first occurrence of the last new token
    gen.eos = frozenset({greedy[j], tiny_tokenizer.eos_token_id})
    result = gen.generate(prompts[1], SamplingParams(max_new_tokens=N))
    assert result.finish_reason == "stop" and result.tokens == greedy[: j + 1]


def test_stop_string_cuts_text_and_stream_matches(lm, tiny_tokenizer, prompts):
    gen = Generator(lm, tiny_tokenizer)
    full = gen.generate(prompts[1], SamplingParams(max_new_tokens=N))
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    assert stop
    stream = gen.stream(prompts[1], SamplingParams(max_new_tokens=N, stop=(stop,)))
    deltas = list(stream)
    assert stream.result.finish_reason == "stop"
    assert "".join(deltas) == stream.result.text == full.text[: full.text.index(stop)]


def test_streaming_never_splits_a_character(tiny_tokenizer):
    text = "héllo wörld 漢字 🙂 naïve ✓"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text) // 2  # byte-level pieces: characters really are split across tokens
    assembler = TextAssembler(tiny_tokenizer)
    deltas = [assembler.push([i]).text for i in ids] + [assembler.finish().text]
    assert "".join(deltas) == text
    assert not any(REPLACEMENT in d for d in deltas)


def test_stop_string_prefix_is_held_back(tiny_tokenizer):
    assembler = TextAssembler(tiny_tokenizer, stop=("END",))
    ids = tiny_tokenizer("abc EN", add_special_tokens=False)["input_ids"]
    emitted = "".join(assembler.push([i]).text for i in ids)
    assert emitted == "abc "  # "EN" could start "END": held
    tail = tiny_tokenizer("D more", add_special_tokens=False)["input_ids"]
    delta = assembler.push(tail)
    assert delta.stopped and emitted + delta.text == "abc " and assembler.text == "abc "


def test_batched_equals_one_by_one(lm, tiny_tokenizer, prompts):
    gen = Generator(lm, tiny_tokenizer)
    params = SamplingParams(max_new_tokens=8)
    batched = generate_batch(lm, tiny_tokenizer, prompts, params)
    single = [gen.generate(p, params) for p in prompts]
    assert [r.tokens for r in batched] == [r.tokens for r in single]
    assert all(isinstance(r, GenerationResult) for r in batched)


def test_batched_rows_stop_on_their_own(lm, tiny_tokenizer, prompts):
    gen = Generator(lm, tiny_tokenizer)
    first = gen.generate(prompts[0], SamplingParams(max_new_tokens=8))
    stop = first.text[2:4]
    results = generate_batch(lm, tiny_tokenizer, prompts, SamplingParams(max_new_tokens=8, stop=(stop,)))
    assert results[0].finish_reason == "stop" and results[0].text == first.text[: first.text.index(stop)]
    for row, prompt in zip(results[1:], prompts[1:], strict=True):
        alone = gen.generate(prompt, SamplingParams(max_new_tokens=8, stop=(stop,)))
        assert (row.text, row.finish_reason) == (alone.text, alone.finish_reason)


def test_prompt_errors(lm, tiny_tokenizer):
    gen = Generator(lm, tiny_tokenizer)
    with pytest.raises(ServeError, match="empty"):
        gen.generate([], SamplingParams())
    with pytest.raises(ServeError, match="context"):
        gen.generate([5] * gen.max_context, SamplingParams())
    with pytest.raises(ServeError, match="KV cache"):
        Generator(lm, tiny_tokenizer, use_cache=False).generate([5, 6], speculation=Speculation("prompt_lookup"))
