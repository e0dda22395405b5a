"""`training.trackers: [tensorboard]` works from a plain install and logs what metrics.jsonl logs (issue 9, #13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_tensorboard_is_a_dependency_of_a_plain_install():
    """Not only of the test extra: a user who ran `pip install tunelab` can turn the tracker on."""
    import re

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in project["dependencies"]]
    assert "tensorboard" in names


def test_tensorboard_event_file_holds_the_losses_of_metrics_jsonl(make_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tunelab.train.loop import train

    config = make_config("name=tb", "training.max_steps=4", "training.trackers=[tensorboard]")
    run_dir = Path(train(config).run_dir)
    steps = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]

    scalars = run_dir / "trackers" / "tunelab"  # the hyperparameter table goes to a subfolder of its own
    assert len(list(scalars.glob("events.out.tfevents.*"))) == 1
    accumulator = EventAccumulator(str(scalars)).Reload()
    logged = {e.step: e.value for e in accumulator.Scalars("loss")}
    assert sorted(logged) == [1, 2, 3, 4]
    for record in steps:  # tensorboard stores float32
        assert logged[record["step"]] == pytest.approx(record["loss"], rel=1e-6)
    assert len({round(v, 6) for v in logged.values()}) > 1  # real per-step values, not one repeated number


def test_tracker_config_is_flat_scalars():
    from tunelab.train.metrics import tracker_config

    tree = {"name": "x", "training": {"max_steps": 4, "lr": 0.5, "packing": True, "trackers": ["tensorboard"]},
            "model": {"revision": None}}
    assert tracker_config(tree) == {"name": "x", "training.max_steps": 4, "training.lr": 0.5,
                                    "training.packing": True, "training.trackers": '["tensorboard"]',
                                    "model.revision": "null"}
