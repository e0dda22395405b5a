"""A skipped non-finite step still advances the LR schedule; a checkpoint missing a trainable
parameter is refused by name instead of leaving that parameter at its fresh initialisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tunelab.errors import CheckpointError
from tunelab.train.checkpoint import load_checkpoint
from tunelab.train.loop import train
from tunelab.train.state_io import read_state


def _lrs(run_dir: str) -> dict[int, float]:
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in rows if "lr" in r}


def test_skipped_step_advances_the_schedule(make_config, monkeypatch):
    from tunelab.methods.sft import SFT

    steps = ["training.max_steps=6", "training.lr_scheduler=linear", "training.save_every=1", "training.keep_last=10"]
    clean = _lrs(train(make_config("name=clean", *steps)).run_dir)
    real_loss = SFT.loss
    calls = {"n": 0}

    def nan_at_2(self, model, batch):
        calls["n"] += 1
        loss, metrics = real_loss(self, model, batch)
        return (loss * float("nan") if calls["n"] == 2 else loss), metrics

    monkeypatch.setattr(SFT, "loss", nan_at_2)
    config = make_config("name=skip", *steps)
    result = train(config)
    assert result.skipped_steps == 1
    flaky = _lrs(result.run_dir)
    assert sorted(flaky) == [1, 3, 4, 5, 6]
    # step k uses the learning rate of step k whether or not an earlier step was skipped
    assert all(flaky[s] == clean[s] for s in flaky), (flaky, clean)
    assert len(set(clean.values())) == 6  # linear decay: every step has its own rate
    for step in (1, 3, 4, 5, 6):  # a skipped step writes no checkpoint
        state = read_state(config.run_dir() / "checkpoints" / f"step-{step}")
        assert state["scheduler"]["last_epoch"] == state["step"] == step


def test_checkpoint_missing_a_trainable_parameter_is_refused(make_config):
    from tunelab.models.load import load_model

    config = make_config("name=partial", "training.max_steps=2", "training.save_every=2")
    train(config)
    ckpt = config.run_dir() / "checkpoints" / "step-2"
    weights = load_file(str(ckpt / "trainable.safetensors"))
    dropped = sorted(weights)[0]
    save_file({k: v for k, v in weights.items() if k != dropped}, str(ckpt / "trainable.safetensors"))
    model, _ = load_model(config.model, config.adapter, for_training=True, device="cpu")
    with pytest.raises(CheckpointError, match=dropped.replace(".", r"\.")) as err:
        load_checkpoint(ckpt, model)
    assert "fix:" in str(err.value)


def test_resume_with_more_trainable_parameters_is_refused(make_config):
    config = make_config("name=grown", "training.max_steps=4", "training.save_every=2",
                         "adapter.target_modules=[q_proj]")
    train(config)
    grown = make_config("name=grown", "training.max_steps=4", "training.save_every=2",
                        "adapter.target_modules=[q_proj,v_proj]")
    with pytest.raises(CheckpointError, match=r"v_proj\.lora_A"):
        train(grown, resume=True)
