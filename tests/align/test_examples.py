"""The alignment example configs validate and their datasets parse (with the tiny tokenizer)."""

from __future__ import annotations

import pytest

from tunelab.config import load_config
from tunelab.data.preference import load_alignment_data
from tunelab.methods.args import parse_method_args

KIND = {"kto": "unpaired", "ppo": "prompt"}


@pytest.mark.parametrize("name", ["dpo", "ipo", "simpo", "orpo", "kto", "reward", "ppo"])
def test_example_config_and_data(name, tiny_tokenizer):
    cfg = load_config(f"examples/{name}.yaml")
    parse_method_args(cfg.method, cfg.method_args)
    data = load_alignment_data(cfg.data, tiny_tokenizer, KIND.get(cfg.method, "preference"))
    assert not data.rejects and len(data.train) >= 28 and data.validation
