"""Every SFT example config is valid and trains: on ``tiny`` always (a dry run of the config),
and on the bundled 135M model in the slow suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.config import load_config
from tunelab.train.loop import train

EXAMPLES = sorted(Path(__file__).resolve().parents[2].joinpath("examples").glob("sft-*.yaml"))
NAMES = [p.stem for p in EXAMPLES]


def test_all_adapter_types_have_an_example():
    types = {load_config(p).adapter.type for p in EXAMPLES}
    assert types >= {"lora", "qlora", "dora", "prompt_tuning", "prefix_tuning", "llama_adapter", "full"}


def _run(path: Path, tmp_path, model: str, steps: int, monkeypatch):
    monkeypatch.chdir(path.parents[1])  # example data paths are relative to the checkout
    shape = ["adapter.adapter_layers=2"] if model == "tiny" and "llama-adapter" in path.stem else []
    cfg = load_config(
        path,
        [
            *shape,
            f"model.name={model}",
            f"training.max_steps={steps}",
            "training.eval_every=0",
            "training.save_every=0",
            f"output_dir={tmp_path}",
            f"name={path.stem}",
        ],
    )
    result = train(cfg)
    assert result.steps == steps and result.final_loss is not None and result.val["val_loss"] > 0
    assert Path(result.output).is_dir()
    return result


@pytest.mark.parametrize("path", EXAMPLES, ids=NAMES)
def test_example_dry_run_on_tiny(path, tmp_path, monkeypatch):
    _run(path, tmp_path, "tiny", 2, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=NAMES)
def test_example_on_bundled_model(path, tmp_path, monkeypatch):
    _run(path, tmp_path, "smollm2-135m-instruct", 2, monkeypatch)
