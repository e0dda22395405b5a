"""``training.max_minutes``: the schedule's progress follows the time spent, and no step starts once
the budget is spent (the run still finishes: final evaluation and save)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from tunelab.config import TrainArgs
from tunelab.train.distributed import Ranks
from tunelab.train.loop import train
from tunelab.train.optim import TimeBudget, lr_factor


def test_progress_is_the_larger_of_steps_and_time_by_hand():
    args = TrainArgs(max_steps=100, warmup_steps=0, lr_scheduler="cosine", min_lr_ratio=0.1)
    # step 10: step progress 0.1; half the time spent: progress 0.5 -> 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55
    assert lr_factor(10, args, time_used=0.5) == pytest.approx(0.55)
    assert lr_factor(10, args, time_used=0.05) == pytest.approx(0.1 + 0.45 * (1 + math.cos(0.1 * math.pi)))
    assert lr_factor(10, args, time_used=3.0) == pytest.approx(0.1)  # past the budget: the floor
    assert lr_factor(10, args) == lr_factor(10, args, time_used=0.0)
    warm = TrainArgs(max_steps=100, warmup_steps=4, lr_scheduler="linear")
    assert lr_factor(1, warm, time_used=0.9) == pytest.approx(0.5)  # warmup stays on steps


def test_budget_spent_by_the_clock():
    assert not TimeBudget(None, 0.0).spent(Ranks())  # no budget: never spent
    fresh = TimeBudget(10.0, time.time())
    assert not fresh.spent(Ranks()) and 0 <= fresh.used < 0.01
    old = TimeBudget(1.0, time.time() - 90)  # 1.5 minutes ago, 1-minute budget
    assert old.spent(Ranks()) and old.used == pytest.approx(1.5, abs=0.05)


def _records(run_dir: str) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_a_spent_budget_stops_the_run_and_it_still_saves(make_config):
    # a budget of 6 ms is spent while the model loads: no step starts, the model is still saved
    result = train(make_config("name=budget", "training.max_steps=50", "training.max_minutes=0.0001"))
    assert result.steps == 0
    assert not [r for r in _records(result.run_dir) if "loss" in r]
    assert (Path(result.run_dir) / "adapter").is_dir()


def test_an_ample_budget_changes_nothing(make_config):
    args = ["training.max_steps=3", "training.lr_scheduler=linear", "training.learning_rate=0.01"]
    result = train(make_config("name=ample", *args, "training.max_minutes=600"))
    assert result.steps == 3
    lrs = [r["lr"] for r in _records(result.run_dir) if "lr" in r]
    # the step schedule (1, 2/3, 1/3 of the peak): 600 minutes are not noticeably spent
    assert lrs == pytest.approx([0.01, 0.01 * 2 / 3, 0.01 / 3], rel=1e-3)
