"""bench/gpu_check.py: its CPU dry run builds the four run configs and the planner's predictions;
on a GPU the real check runs (marked gpu)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


def _run(tmp_path: Path, *args: str) -> list[dict]:
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--json", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow  # reads the bundled model's config
def test_dry_run_plans_every_run(tmp_path):
    rows = _run(tmp_path, "--device", "cpu", "--dry-run")
    assert [(r["model"].split()[0], r["run"]) for r in rows] == [
        ("smollm2-135m-instruct", "sft-qlora"),
        ("smollm2-135m-instruct", "dpo-qlora"),
        ("smollm2-1.7b", "sft-qlora"),
        ("smollm2-1.7b", "dpo-qlora"),
    ]
    small, large = rows[0]["predicted_gib"], rows[2]["predicted_gib"]
    assert 0 < small < large  # a 1.7B body holds more than a 135M one at the same batch


def test_the_measuring_path_runs_on_cpu_with_tiny(tmp_path):
    """Everything but the CUDA memory counters and the random-weights builder, in seconds."""
    rows = _run(tmp_path, "--device", "cpu", "--bundled", "tiny", "--larger", "", "--steps", "2")
    assert [r["run"] for r in rows] == ["sft-qlora", "dpo-qlora"]
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["mfu"] > 0 and row["peak_gib"] > 0 and row["predicted_gib"] > 0
        assert row["measured/predicted"] == pytest.approx(row["peak_gib"] / row["predicted_gib"])
        assert row["final_loss"] == row["final_loss"]  # finite: not NaN


@pytest.mark.gpu
def test_gpu_check_measures_every_run(tmp_path):
    rows = _run(tmp_path, "--device", "cuda", "--steps", "3")
    for row in rows:
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1 and row["peak_gib"] > 0
