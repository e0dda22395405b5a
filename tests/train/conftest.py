"""Fixtures for loop tests: a small learnable SFT dataset and a config factory on ``tiny``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.config import RunConfig, load_config

COLORS = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple"]
ANIMALS = ["cat", "dog", "bird", "fish", "lion", "cow", "horse", "bee"]


@pytest.fixture(scope="session")
def sft_file(tmp_path_factory):
    """48 alpaca rows with a learnable mapping (animal -> color) and a fixed answer shape."""
    path = tmp_path_factory.mktemp("data") / "sft.jsonl"
    with open(path, "w") as fh:
        for i in range(48):
            animal, color = ANIMALS[i % 8], COLORS[(i * 3) % 8]
            row = {
                "instruction": f"What color is the {animal} number {i}?",
                "input": "",
                "output": f"The {animal} is {color}.",
            }
            fh.write(json.dumps(row) + "\n")
    return path


def tiny_overrides(data_path: Path, output_dir: Path) -> list[str]:
    """The deterministic base of the training tests: tiny, fp32, no dropout, a fixed learning rate."""
    return [
        "model.name=tiny",
        f"data.path={data_path}",
        "data.max_length=64",
        "adapter.dropout=0.0",
        "training.precision=fp32",
        "training.learning_rate=0.01",
        f"output_dir={output_dir}",
    ]


@pytest.fixture()
def make_config(sft_file, tmp_path):
    """Build a RunConfig on tiny with fp32, no dropout and small steps; overrides as key=value."""

    def build(*overrides: str) -> RunConfig:
        base = tiny_overrides(sft_file, tmp_path / "runs")
        base += ["training.max_steps=6", "training.micro_batch_size=4", "training.lr_scheduler=constant"]
        return load_config(None, base + list(overrides))

    return build
