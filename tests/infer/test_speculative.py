"""Speculative decoding: acceptance rules by hand, exact distribution, greedy identity."""

from __future__ import annotations

import pytest
import torch

from tunelab.infer import Generator, SamplingParams, Speculation, lookup_ngram, verify
from tunelab.infer.speculative import Draft

N = 10


def one_hot(i: int, v: int = 4) -> torch.Tensor:
    t = torch.zeros(v)
    t[i] = 1.0
    return t


def test_greedy_accepts_longest_agreeing_prefix_plus_target_token():
    p = [one_hot(2), one_hot(1), one_hot(3), one_hot(0)]
    assert verify(Draft([2, 1, 0]), p, SamplingParams(), None) == ([2, 1, 3], 2)  # 3rd draft wrong → target's 3
    assert verify(Draft([2, 1, 3]), p, SamplingParams(), None) == ([2, 1, 3, 0], 3)  # all right → bonus token
    assert verify(Draft([0, 1, 3]), p, SamplingParams(), None) == ([2], 0)


def test_rejection_sampling_emits_exactly_the_target_distribution():
    """Leviathan et al. Thm 1: the first emitted token is distributed as p, whatever q is."""
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    q = torch.tensor([0.4, 0.3, 0.2, 0.1])
    params = SamplingParams(temperature=1.0)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    n = 20000
    for _ in range(n):
        x = int(torch.multinomial(q, 1, generator=gen))
        tokens, _ = verify(Draft([x], [q]), [p, p], params, gen)
        counts[tokens[0]] += 1
    assert torch.allclose(counts / n, p, atol=0.012)


def test_rejection_with_one_hot_draft_accepts_with_probability_p():
    p = torch.tensor([0.25, 0.75])
    gen = torch.Generator().manual_seed(1)
    n = 8000
    accepted = sum(verify(Draft([0]), [p, p], SamplingParams(temperature=1.0), gen)[1] for _ in range(n))
    assert abs(accepted / n - 0.25) < 0.02


def test_lookup_ngram_hand_cases():
    seq = [1, 2, 3, 4, 5, 9, 2, 3]
    assert lookup_ngram(seq, 2, max_ngram=2) == [4, 5]  # "2 3" seen before, followed by 4 5
    assert lookup_ngram([7, 8, 9], 3) == []
    assert lookup_ngram([1, 2, 1, 2, 1], 3, max_ngram=3) == [2, 1]  # most recent match of "1 2 1"


@pytest.mark.parametrize("kind", ["prompt_lookup", "draft"])
def test_greedy_speculation_is_token_identical(lm, draft_lm, tiny_tokenizer, prompts, kind):
    plain = Generator(lm, tiny_tokenizer)
    spec = Generator(lm, tiny_tokenizer, draft_model=draft_lm)
    drafted = accepted = 0
    for prompt in prompts[:1]:
        ref = plain.generate(prompt, SamplingParams(max_new_tokens=N))
        hf = lm.generate(torch.tensor([prompt]), max_new_tokens=N, do_sample=False, pad_token_id=0)
        out = spec.generate(prompt, SamplingParams(max_new_tokens=N), speculation=Speculation(kind, num_tokens=3))
        assert out.tokens == ref.tokens == hf[0, len(prompt) :].tolist()
        drafted += out.timings.drafted
        accepted += out.timings.accepted
        assert out.timings.forward_passes <= ref.timings.forward_passes
    assert drafted > 0 and 0 < accepted  # the acceptance path really ran


def test_sampled_speculation_is_seed_reproducible(lm, draft_lm, tiny_tokenizer, prompts):
    gen = Generator(lm, tiny_tokenizer, draft_model=draft_lm)
    params = SamplingParams(max_new_tokens=N, temperature=1.0, seed=5)
    a = gen.generate(prompts[0], params, speculation=Speculation("draft", num_tokens=3))
    b = gen.generate(prompts[0], params, speculation=Speculation("draft", num_tokens=3))
    assert a.tokens == b.tokens and len(a.tokens) == N
