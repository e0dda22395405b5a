"""Loop invariants: exact gradient accumulation, resume after SIGKILL equals an uninterrupted
run, non-finite steps are skipped and stop the run, checkpoints are atomic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunelab.config import save_config
from tunelab.errors import CheckpointError, TrainingError
from tunelab.train.checkpoint import complete_checkpoints
from tunelab.train.loop import train


def _adapter(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run_dir) / "adapter" / "adapter_model.safetensors"))


def test_micro_batch_1_x_accum_4_equals_4_x_1(make_config):
    # SGD keeps the update linear in the gradient: Adam divides by sqrt(v), so on weights whose
    # gradient is ~0 it turns float rounding noise into full-size steps of either sign.
    sgd = "training.optimizer=sgd"
    a = train(
        make_config(
            "name=mb4",
            sgd,
            "training.micro_batch_size=4",
            "training.gradient_accumulation=1",
            "data.packing=false",
            "training.max_steps=3",
        )
    )
    b = train(
        make_config(
            "name=mb1",
            sgd,
            "training.micro_batch_size=1",
            "training.gradient_accumulation=4",
            "data.packing=false",
            "training.max_steps=3",
        )
    )
    wa, wb = _adapter(a.run_dir), _adapter(b.run_dir)
    assert wa.keys() == wb.keys() and len(wa) > 0
    init = train(make_config("name=mb0", sgd, "training.max_steps=1", "training.learning_rate=1e-12"))
    moved = max(float((wa[k] - _adapter(init.run_dir)[k]).abs().max()) for k in wa)
    assert moved > 1e-3  # the runs really trained
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5, rtol=0), k


def _cli_train(config_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "tunelab.cli.main", "train", str(config_path), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_then_resume_equals_uninterrupted(make_config, tmp_path):
    steps = [
        "training.max_steps=160",
        "training.save_every=10",
        "training.keep_last=3",
        "training.micro_batch_size=2",
        "adapter.dropout=0.1",
    ]  # dropout on: the RNG state must be restored too
    reference = train(make_config("name=straight", *steps))
    config = make_config("name=killed", *steps)
    run_dir = config.run_dir()
    run_dir.mkdir(parents=True)
    cfg_path = run_dir / "config.yaml"
    save_config(config, cfg_path)
    proc = _cli_train(cfg_path)
    deadline = time.time() + 120
    while time.time() < deadline and not any(
        int(p.name.split("-")[1]) >= 40 for p in complete_checkpoints(run_dir / "checkpoints")
    ):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "adapter").exists(), "the run finished before it was killed"
    last = complete_checkpoints(run_dir / "checkpoints")[-1]
    assert 40 <= int(last.name.split("-")[1]) < 160
    resumed = _cli_train(cfg_path, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    ref, got = _adapter(reference.run_dir), _adapter(run_dir)
    for k in ref:
        assert torch.allclose(ref[k], got[k], atol=1e-6, rtol=0), k


def test_existing_run_needs_resume(make_config):
    train(make_config("name=twice", "training.max_steps=2"))
    with pytest.raises(CheckpointError, match="--resume"):
        train(make_config("name=twice", "training.max_steps=2"))


def test_non_finite_steps_are_skipped_then_stop_the_run(make_config, monkeypatch):
    from tunelab.methods.sft import SFT

    real_loss = SFT.loss
    calls = {"n": 0}

    def flaky(self, model, batch):
        calls["n"] += 1
        loss, metrics = real_loss(self, model, batch)
        return (loss * float("nan") if calls["n"] in (2, 3) else loss), metrics

    monkeypatch.setattr(SFT, "loss", flaky)
    result = train(make_config("name=flaky", "training.max_steps=5", "training.max_bad_steps=3"))
    assert result.skipped_steps == 2 and result.steps == 5

    calls["n"] = -100  # now: every step from the 3rd on is NaN -> stops after 3 in a row
    monkeypatch.setattr(SFT, "loss", lambda self, m, b: (real_loss(self, m, b)[0] * float("nan"), {}))
    config = make_config("name=diverge", "training.max_steps=20", "training.save_every=1", "training.max_bad_steps=3")
    with pytest.raises(TrainingError, match="3 non-finite steps in a row"):
        train(config)
    assert not complete_checkpoints(config.run_dir() / "checkpoints")  # no bad state was ever saved


def test_incomplete_checkpoint_is_ignored(make_config):
    config = make_config("name=atomic", "training.max_steps=4", "training.save_every=2")
    train(config)
    ckpts = config.run_dir() / "checkpoints"
    assert [p.name for p in complete_checkpoints(ckpts)] == ["step-2", "step-4"]
    torn = ckpts / "step-6"
    torn.mkdir()
    (torn / "trainable.safetensors").write_bytes(b"partial")
    (ckpts / "step-8.tmp").mkdir()
    assert [p.name for p in complete_checkpoints(ckpts)] == ["step-2", "step-4"]
