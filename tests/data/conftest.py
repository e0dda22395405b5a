"""Helpers for data tests: write small datasets in any supported file type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def jsonl(tmp_path):
    """``jsonl(rows, name="d.jsonl") -> Path``."""

    def make(rows: list, name: str = "d.jsonl") -> Path:
        return write_jsonl(tmp_path / name, rows)

    return make


def alpaca_rows(n: int) -> list[dict]:
    return [{"instruction": f"Say number {i}", "input": "", "output": f"number {i} said"} for i in range(n)]


def trained_text(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """Decode the tokens that carry a label (what the loss trains on)."""
    return tokenizer.decode([t for t, lab in zip(input_ids, labels, strict=True) if lab != -100])
