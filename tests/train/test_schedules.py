"""Learning-rate schedules against hand-computed values, and the resumable sampler."""

from __future__ import annotations

import math

import pytest

from tunelab.config import TrainArgs
from tunelab.train.optim import lr_factor
from tunelab.train.sampler import ResumableSampler


def test_warmup_then_cosine_by_hand():
    args = TrainArgs(max_steps=12, warmup_steps=2, lr_scheduler="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, args) == pytest.approx(0.5)  # (0+1)/2
    assert lr_factor(1, args) == pytest.approx(1.0)
    assert lr_factor(2, args) == pytest.approx(1.0)  # progress 0 -> peak
    # step 7: progress (7-2)/10 = 0.5 -> 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55
    assert lr_factor(7, args) == pytest.approx(0.55)
    assert lr_factor(12, args) == pytest.approx(0.1)


def test_linear_and_constant_by_hand():
    lin = TrainArgs(max_steps=10, lr_scheduler="linear")
    assert [lr_factor(s, lin) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    const = TrainArgs(max_steps=10, warmup_steps=4, lr_scheduler="constant")
    assert [lr_factor(s, const) for s in (0, 3, 9)] == pytest.approx([0.25, 1.0, 1.0])
    assert math.isclose(lr_factor(4, TrainArgs(max_steps=8, lr_scheduler="cosine")), 0.5)


def test_sampler_resume_continues_the_same_order():
    full = ResumableSampler(10, seed=3)
    order = full.take(25)  # crosses two epoch boundaries
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))
    assert order[:10] != order[10:20]  # each epoch reshuffled
    first = ResumableSampler(10, seed=3)
    head = first.take(13)
    resumed = ResumableSampler(10, seed=3)
    resumed.load_state_dict(first.state_dict())
    assert head + resumed.take(12) == order
