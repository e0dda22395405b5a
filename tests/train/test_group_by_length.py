"""Length-grouped batches (training.group_by_length): every example once per epoch, seeded,
rank-aware, resumable, and batches cut from length-sorted mega-batches."""

from __future__ import annotations

import json
import random

from tunelab.data.preference import PreferenceItem
from tunelab.data.types import Row
from tunelab.methods.base import Method
from tunelab.train.loop import train
from tunelab.train.sampler import LengthGroupedSampler, ResumableSampler


def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(5, 400) for _ in range(n)]


def test_hand_computed_batches_of_one_mega_batch():
    # lengths by index: sorted longest first = [5 (6), 0 (5), 2 (4), 4 (3), 3 (2), 1 (1)]
    sampler = LengthGroupedSampler([5, 1, 4, 2, 3, 6], seed=0, batch_size=2)
    batches = [tuple(sampler.take(2)) for _ in range(3)]
    assert sorted(map(sorted, batches)) == [[0, 5], [1, 3], [2, 4]]


def test_every_example_exactly_once_per_epoch_and_seeded():
    lengths = _lengths(37)
    sampler = LengthGroupedSampler(lengths, seed=5, batch_size=4, mega_batches=3)
    first, second = sampler.take(37), sampler.take(37)
    assert sorted(first) == list(range(37)) and sorted(second) == list(range(37))
    assert first != second  # each epoch reshuffled
    again = LengthGroupedSampler(lengths, seed=5, batch_size=4, mega_batches=3)
    assert again.take(74) == first + second
    assert LengthGroupedSampler(lengths, seed=6, batch_size=4, mega_batches=3).take(37) != first


def test_batches_come_from_sorted_mega_batches():
    lengths = _lengths(120, seed=1)
    batch, mega = 4, 5  # mega-batches of 20 rows, 6 of them per epoch
    order = LengthGroupedSampler(lengths, seed=2, batch_size=batch, mega_batches=mega).take(120)
    for start in range(0, 120, batch * mega):
        chunk = order[start : start + batch * mega]
        groups = sorted(([lengths[i] for i in chunk[j : j + batch]] for j in range(0, len(chunk), batch)), key=max)
        for shorter, longer in zip(groups, groups[1:], strict=False):  # length ranges do not overlap
            assert max(shorter) <= min(longer)
    # the point of it: far less padding than the plain seeded order
    plain = ResumableSampler(120, seed=2).take(120)

    def padded(o: list[int]) -> int:
        return sum(batch * max(lengths[i] for i in o[j : j + batch]) for j in range(0, 120, batch))

    assert padded(order) < 0.8 * padded(plain)


def test_rank_split_equals_one_process_with_the_global_batch():
    lengths = _lengths(40, seed=3)
    single = LengthGroupedSampler(lengths, seed=7, batch_size=6)
    ranks = [LengthGroupedSampler(lengths, seed=7, batch_size=3, rank=r, world=2) for r in range(2)]
    for _ in range(10):  # crosses epoch boundaries
        taken = [r.take(3) for r in ranks]
        assert taken[0] + taken[1] == single.take(6)
    assert ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict()


def test_resume_continues_the_same_order():
    lengths = _lengths(23, seed=4)
    full = LengthGroupedSampler(lengths, seed=3, batch_size=4).take(50)
    first = LengthGroupedSampler(lengths, seed=3, batch_size=4)
    head = first.take(17)
    resumed = LengthGroupedSampler(lengths, seed=3, batch_size=4)
    resumed.load_state_dict(first.state_dict())
    assert head + resumed.take(33) == full


def test_item_length_of_rows_pairs_and_completions():
    method = Method.__new__(Method)
    assert method.item_length(Row(input_ids=[1, 2, 3], labels=[1, 2, 3], position_ids=[0, 1, 2])) == 3
    pair = PreferenceItem(prompt_ids=[1, 2], chosen_ids=[3, 4, 5], rejected_ids=[6])
    assert method.item_length(pair) == 5  # prompt + the longer completion: the padded width


def test_training_with_grouped_batches_sees_each_example_once(tmp_path, make_config):
    # four length classes of four identical rows each: grouped, every micro-batch of 4 is one class
    path = tmp_path / "varied.jsonl"
    rows = [{"instruction": "Say it.", "input": "", "output": " ".join(["word"] * n)} for n in (1, 8, 20, 40) * 4]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = [f"data.path={path}", "data.max_length=128", "data.packing=false", "data.validation_split=0"]
    base.append("training.max_steps=4")
    steps = {}
    for grouped in (False, True):
        result = train(make_config(*base, f"training.group_by_length={str(grouped).lower()}", f"name=g{grouped}"))
        records = [json.loads(x) for x in open(f"{result.run_dir}/metrics.jsonl")]
        steps[grouped] = [r["tokens"] for r in records if "tokens" in r]
    assert sum(steps[True]) == sum(steps[False])  # one epoch: the same examples, in another order
    assert len(set(steps[True])) == 4 and all(t % 4 == 0 for t in steps[True])  # one class per batch
    assert sorted(steps[True]) != sorted(steps[False])
