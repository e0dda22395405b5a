"""Synthetic alignment tasks on ``tiny``: a fixed answer format is preferred over a rude refusal."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tunelab.config import RunConfig, load_config

CHOSEN = "{a} is the sum"
REJECTED = "the sum is {a}"


def _qa(rng: random.Random) -> tuple[str, str]:
    x, y = rng.randint(1, 9), rng.randint(1, 9)
    return f"What is {x} plus {y}?", str(x + y)


def preference_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q, a = _qa(rng)
        rows.append({"prompt": q, "chosen": CHOSEN.format(a=a), "rejected": REJECTED.format(a=a)})
    return rows


def unpaired_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q, a = _qa(rng)
        good = i % 2 == 0
        rows.append({"prompt": q, "completion": CHOSEN.format(a=a) if good else REJECTED.format(a=a), "label": good})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture()
def pref_data(tmp_path) -> tuple[str, str]:
    train = write_jsonl(tmp_path / "pref_train.jsonl", preference_rows(48, seed=1))
    val = write_jsonl(tmp_path / "pref_val.jsonl", preference_rows(16, seed=2))
    return train, val


def tiny_config(tmp_path: Path, method: str, data: tuple[str, str | None], **sections) -> RunConfig:
    """A small run of ``method`` on tiny; ``sections`` override config sections (dicts)."""
    tree = {
        "method": method,
        "name": f"{method}-test",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": "tiny"},
        "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "data": {"path": data[0], "validation_path": data[1], "max_length": 64, "max_prompt_length": 48},
        "training": {"max_steps": 20, "micro_batch_size": 8, "learning_rate": 5e-3, "lr_scheduler": "constant",
                     "precision": "fp32", "device": "cpu", "log_every": 1},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    return load_config(None, base=tree)  # the users' path: method_args checked, errors are ConfigError
