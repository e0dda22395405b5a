"""Datasets of the bundled lm-eval tasks, read from the jsonl files beside this module.

lm-eval calls these through ``custom_dataset: !function task_data.NAME`` in each task's YAML, so
nothing is downloaded: the rows are this folder's files, written for tunelab.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rows(name: str) -> list[dict]:
    lines = (HERE / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _test_split(name: str):
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(_rows(name))})


def multiple_choice(**_metadata):
    """``tunelab_mc``: question, four choices, index of the right one."""
    return _test_split("multiple_choice.jsonl")


def generation(**_metadata):
    """``tunelab_gen``: question and a short exact answer."""
    return _test_split("generation.jsonl")


def rolling(**_metadata):
    """``tunelab_rolling``: short paragraphs for word/byte perplexity."""
    return _test_split("rolling.jsonl")
