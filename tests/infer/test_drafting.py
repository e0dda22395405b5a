"""A cheap draft (tunelab.infer.drafting): restricted head, int8, confidence-gated drafting, saved recipe.

What must hold: the restricted head scores exactly the kept rows of the full head; greedy proposals
equal the full draft's while its argmax is a kept token; the confidence gate drafts only tokens the
draft gives at least that probability; greedy speculative output stays the target's, token for token.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from tunelab.errors import ConfigError
from tunelab.infer import Generator, SamplingParams, Speculation
from tunelab.infer.cache import KVState
from tunelab.infer.drafting import (
    DraftRuntime,
    coverage,
    frequent_tokens,
    load_draft,
    prepare_draft,
    restrict_head,
)
from tunelab.infer.lean import LeanState
from tunelab.infer.speculative import ModelDrafter

N = 12


def test_frequent_tokens_and_coverage_by_hand():
    seqs = [[5, 5, 7, 9], [7, 5, 3]]  # counts: 5→3, 7→2, 9→1, 3→1 (tie: smaller id first)
    assert frequent_tokens(seqs, 2) == [5, 7]
    assert frequent_tokens(seqs, 3) == [3, 5, 7]
    assert frequent_tokens(seqs, 1, always=[0]) == [0, 5]
    assert coverage(seqs, [5, 7]) == pytest.approx(5 / 7)
    assert coverage([], [1]) == 0.0


def test_restricted_head_scores_the_kept_rows(draft_lm, prompts):
    vocab = list(range(0, 512, 3))
    small = restrict_head(copy.deepcopy(draft_lm), vocab)
    ids = torch.tensor([prompts[0]])
    with torch.no_grad():
        full = draft_lm(input_ids=ids).logits[0]
        part = small(input_ids=ids).logits[0]
    assert part.shape == (len(prompts[0]), len(vocab))
    assert torch.allclose(part, full[:, vocab], atol=1e-6)
    assert small.draft_vocab.tolist() == vocab
    assert draft_lm.get_output_embeddings().weight.shape[0] == 512  # the original is untouched
    with pytest.raises(ConfigError, match="outside 0..511"):
        restrict_head(copy.deepcopy(draft_lm), [600])


def greedy_tokens(model, ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """Greedy tokens of ``model`` over the full vocabulary and each one's probability (full recompute)."""
    out, conf = [], []
    with torch.no_grad():
        for _ in range(n):
            probs = model(input_ids=torch.tensor([ids + out])).logits[0, -1].softmax(-1)
            out.append(int(probs.argmax()))
            conf.append(float(probs.max()))
    return out, conf


def test_restricted_greedy_proposals_equal_the_full_drafts_when_the_argmax_is_kept(draft_lm, prompts):
    expected, _ = greedy_tokens(draft_lm, prompts[1], 5)
    kept = sorted(set(expected) | {0, 1, 2})
    small = restrict_head(copy.deepcopy(draft_lm), kept)
    proposal = ModelDrafter(small).propose(prompts[1], 5, SamplingParams(), None)
    assert proposal.tokens == expected and proposal.probs is None
    # without the first greedy token in the head, the draft proposes something else (never a dropped token)
    other = restrict_head(copy.deepcopy(draft_lm), [t for t in range(512) if t != expected[0]])
    first = ModelDrafter(other).propose(prompts[1], 1, SamplingParams(), None).tokens
    assert first and first[0] != expected[0]


def test_confidence_gate_drafts_only_confident_tokens(draft_lm, prompts):
    tokens, conf = greedy_tokens(draft_lm, prompts[2], 6)
    threshold = sorted(conf)[len(conf) // 2]  # some tokens fall below it
    cut = next((i for i, c in enumerate(conf) if c < threshold), len(conf))
    gated = ModelDrafter(draft_lm, min_confidence=threshold).propose(prompts[2], 6, SamplingParams(), None)
    assert gated.tokens == tokens[:cut] and cut < 6
    # sampling: every drafted token's q gives its most likely token at least the threshold
    params = SamplingParams(temperature=1.0)
    sampled = ModelDrafter(draft_lm, min_confidence=0.01).propose(
        prompts[2], 4, params, torch.Generator().manual_seed(0)
    )
    assert len(sampled.probs) == len(sampled.tokens) and all(float(q.max()) >= 0.01 for q in sampled.probs)


def test_sampled_drafts_from_a_restricted_head_are_full_distributions_zero_outside(draft_lm, prompts):
    vocab = list(range(0, 512, 2))
    small = restrict_head(copy.deepcopy(draft_lm), vocab)
    draft = ModelDrafter(small).propose(
        prompts[0], 3, SamplingParams(temperature=1.0), torch.Generator().manual_seed(1)
    )
    for q, token in zip(draft.probs, draft.tokens, strict=True):
        assert q.shape == (512,) and float(q.sum()) == pytest.approx(1.0, abs=1e-5)
        assert float(q[1::2].abs().sum()) == 0.0 and token % 2 == 0


@pytest.mark.parametrize(
    ("vocab", "quantize", "gated"),
    [(list(range(0, 512, 2)), "none", True), (list(range(300)), "int8", False), ([], "int8", True)],
)
def test_greedy_speculation_with_a_prepared_draft_is_token_identical(
    lm, draft_lm, tiny_tokenizer, prompts, vocab, quantize, gated
):
    draft = prepare_draft(copy.deepcopy(draft_lm), DraftRuntime(vocab, quantize))
    if gated:  # tiny is nearly uniform: gate at the median confidence of its own positions
        with torch.no_grad():
            conf = draft(input_ids=torch.tensor([prompts[0]])).logits[0].softmax(-1).max(-1).values
        draft.draft_runtime.min_confidence = float(conf.median())
    plain = Generator(lm, tiny_tokenizer)
    spec = Generator(lm, tiny_tokenizer, draft_model=draft)
    drafted = 0
    for prompt in prompts:
        ref = plain.generate(prompt, SamplingParams(max_new_tokens=N))
        out = spec.generate(prompt, SamplingParams(max_new_tokens=N), speculation=Speculation("draft", 5))
        assert out.tokens == ref.tokens
        assert 0 <= out.timings.accepted <= out.timings.drafted
        drafted += out.timings.drafted
    assert drafted > 0


def test_runtime_recipe_round_trips_and_is_checked(tmp_path, draft_lm, tiny_tokenizer):
    draft_lm.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    assert DraftRuntime.read(tmp_path) is None
    plain = load_draft(tmp_path)
    assert not hasattr(plain, "draft_vocab")
    DraftRuntime(vocab=[0, 5, 9], quantize="int8", num_draft=5, min_confidence=0.25).save(tmp_path)
    assert DraftRuntime.read(tmp_path) == DraftRuntime([0, 5, 9], "int8", 5, 0.25)
    loaded = load_draft(tmp_path)
    assert loaded.draft_vocab.tolist() == [0, 5, 9] and loaded.draft_runtime.min_confidence == 0.25
    drafter = ModelDrafter(loaded)  # runs on the lean state, int8, as the recipe says
    assert drafter.min_confidence == 0.25 and isinstance(drafter.state, LeanState)
    assert isinstance(drafter.state.head, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(ModelDrafter(plain).state, KVState)  # a plain model drafts through transformers
    with pytest.raises(ConfigError, match="quantize 'int4'"):
        DraftRuntime(quantize="int4")
    (tmp_path / "draft_runtime.json").write_text('{"vocab": [1], "bogus": 2}')
    with pytest.raises(ConfigError, match="not a draft runtime file"):
        DraftRuntime.read(tmp_path)


def test_an_int8_draft_loaded_in_bf16_drafts_as_its_fp32_copy(draft_lm, prompts):
    """Where bf16 is the fast dtype, ``load_draft`` loads a draft in bf16; an int8 recipe must still run
    (dynamic int8 takes fp32 activations) and propose what the same weights in fp32 propose."""
    half = copy.deepcopy(draft_lm).to(torch.bfloat16)
    wide = copy.deepcopy(half).float()
    runtime = DraftRuntime(list(range(0, 512, 2)), "int8")
    got = LeanState(prepare_draft(half, runtime), "int8").logits(prompts[0], last=3)
    want = LeanState(prepare_draft(wide, copy.deepcopy(runtime)), "int8").logits(prompts[0], last=3)
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_an_int8_draft_folder_loads_its_fp32_weights_where_bf16_is_the_fast_dtype(
    tmp_path, draft_lm, tiny_tokenizer, monkeypatch
):
    """``tunelab draft`` saves and measures the draft in fp32; ``load_draft`` (``tunelab serve --draft``)
    must quantize those weights, not a bf16 rounding of them, whatever dtype the machine's probe prefers."""
    import tunelab.models.precision as precision

    real = precision.choose_precision
    monkeypatch.setattr(precision, "choose_precision", lambda *a, **k: replace(real(*a, **k), dtype="bf16"))
    draft_lm.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    assert next(load_draft(tmp_path).parameters()).dtype == torch.bfloat16  # no recipe: the fast dtype
    DraftRuntime(vocab=[0, 5, 9], quantize="int8").save(tmp_path)
    loaded = load_draft(tmp_path)
    saved, got = draft_lm.model.layers[0].mlp.up_proj.weight, loaded.model.layers[0].mlp.up_proj.weight
    assert got.dtype == torch.float32 and torch.equal(got, saved)
