"""Shared fixtures: the tiny model (built once per cache), a GPU marker, a temp run folder."""

from __future__ import annotations

import os

import pytest

# Runs choose their precision from a timing probe (tunelab/models/precision.py); tests inject its
# measurements so that no result depends on how busy the machine is: bf16 measured slower, so
# `auto` is fp32 everywhere, as the explicit fp32 of most tests. CLI subprocesses inherit it.
os.environ.setdefault("TUNELAB_PRECISION_PROBE", '{"fp32": 100.0, "bf16": 10.0, "fp16": 10.0}')


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_path():
    """Folder of the built-in tiny model."""
    from tunelab.models.tiny import tiny_dir

    return tiny_dir()


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_path)


@pytest.fixture()
def tiny_model(tiny_path):
    """A fresh fp32 copy of tiny for each test (tests may train it)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_path, dtype="float32")
