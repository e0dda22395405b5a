"""Truncation, packing, the seeded split, collation, and packed == alone logits on ``tiny``."""

from __future__ import annotations

import random

import pytest
import torch

from tunelab.data import Row, TokenizedExample, collate_rows, pack, split_indices, to_rows


def _tok(n: int, start: int = 0) -> TokenizedExample:
    ids = list(range(start, start + n))
    return TokenizedExample(ids, [-100, *ids[1:]], n)


def test_best_fit_decreasing_by_hand():
    # lengths 6,5,4,3,2 into rows of 10: 6+4 and 5+3+2 (two full rows)
    examples = [_tok(n, 100 * n) for n in (2, 6, 3, 5, 4)]
    rows = pack(examples, 10)
    assert [len(r) for r in rows] == [10, 10]
    layouts = sorted(tuple(r.input_ids[i] // 100 for i, p in enumerate(r.position_ids) if p == 0) for r in rows)
    assert layouts == [(2, 3, 5), (6, 4)]  # members keep their input order within a row


def test_pack_keeps_every_token_and_restarts_positions():
    rng = random.Random(0)
    examples = [_tok(rng.randint(1, 30), 1000 * i) for i in range(200)]
    rows = pack(examples, 64)
    assert all(len(r) <= 64 for r in rows)
    pieces = []
    for r in rows:
        starts = [i for i, p in enumerate(r.position_ids) if p == 0] + [len(r)]
        for a, b in zip(starts, starts[1:], strict=False):
            assert r.position_ids[a:b] == list(range(b - a))
            pieces.append((r.input_ids[a:b], r.labels[a:b]))
    assert sorted(pieces) == sorted((e.input_ids, e.labels) for e in examples)
    total = sum(len(e.input_ids) for e in examples)
    assert len(rows) >= -(-total // 64)
    assert len(rows) <= -(-total // 64) + 2  # best-fit decreasing on small items is near-optimal


def test_unpacked_rows_are_one_example_each():
    rows = to_rows([_tok(3), _tok(5)], 8, packing=False)
    assert [r.position_ids for r in rows] == [[0, 1, 2], [0, 1, 2, 3, 4]]


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(100, 0.1, seed=7)
    assert len(val) == 10 and len(train) == 90
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(100))
    assert split_indices(100, 0.1, seed=7) == (train, val)
    assert split_indices(100, 0.1, seed=8)[1] != val
    assert split_indices(5, 0.01, seed=0)[1] != [] and split_indices(1, 0.5, seed=0) == ([0], [])
    assert split_indices(10, 0.0, seed=0) == (list(range(10)), [])


def test_collate_pads_right_with_its_own_segment():
    rows = [Row([5, 6, 7], [-100, 6, 7], [0, 1, 2]), Row([8, 9], [-100, 9], [0, 1])]
    batch = collate_rows(rows, pad_id=3)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 3]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, 9, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert all(v.dtype == torch.long for v in batch.values())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_logits_equal_each_example_alone(tiny_path, attn):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32, attn_implementation=attn).eval()
    gen = torch.Generator().manual_seed(0)
    lengths = [7, 12, 5, 9]
    examples = [torch.randint(4, 500, (n,), generator=gen).tolist() for n in lengths]
    toks = [TokenizedExample(e, e, len(e)) for e in examples]
    rows = pack(toks, 24)  # 12+9 / 7+5: two rows of two examples, different lengths (padding)
    batch = collate_rows(rows, pad_id=0)
    assert batch["input_ids"].shape == (2, 21)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        plain = model(input_ids=batch["input_ids"], use_cache=False).logits  # no restart: attention crosses
        for b, row in enumerate(rows):
            starts = [i for i, p in enumerate(row.position_ids) if p == 0] + [len(row)]
            for a, end in zip(starts, starts[1:], strict=False):
                alone = model(input_ids=torch.tensor([row.input_ids[a:end]]), use_cache=False).logits[0]
                torch.testing.assert_close(packed[b, a:end], alone, atol=1e-5, rtol=0)
                if a > 0:  # the check is meaningful: without the restart, the second example differs
                    assert (plain[b, a:end] - alone).abs().max() > 1e-3


def test_sft_loss_on_packed_rows_equals_loss_of_examples_alone(tiny_model, tiny_tokenizer, tmp_path):
    """End to end through the SFT method: packing must not change the loss (no cross-example attention).

    transformers only reads packed ``position_ids`` as sequence boundaries when no KV cache is
    built, so the forward pass must run with ``use_cache=False`` (tiny's config has use_cache=True).
    """
    from tunelab.config import load_config
    from tunelab.methods.sft import SFT

    config = load_config(None, ["model.name=tiny"])
    sft = SFT(config, tiny_model, tiny_tokenizer, tmp_path)
    tiny_model.train()
    gen = torch.Generator().manual_seed(1)
    toks = []
    for n in (9, 6, 11):
        ids = torch.randint(4, 500, (n,), generator=gen).tolist()
        toks.append(TokenizedExample(ids, [-100, *ids[1:]], n))
    with torch.no_grad():
        packed, _ = sft.loss(tiny_model, sft.collate(pack(toks, 32)))
        total, count = 0.0, 0
        for t in toks:
            loss, metrics = sft.loss(tiny_model, sft.collate(to_rows([t], 32, packing=False)))
            total += float(loss) * metrics["trained_tokens"]
            count += metrics["trained_tokens"]
    assert float(packed) == pytest.approx(total / count, abs=1e-5)
