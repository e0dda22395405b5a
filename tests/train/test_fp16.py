"""fp16 training on CPU with a real grad scaler: logged norms are of unscaled gradients, and an
overflowing step lowers the scale and is skipped without counting towards the stop.

accelerate makes no grad scaler on CPU, so the fixture gives the loop's accelerator the same
pieces it has on a GPU without bf16: fp16 autocast (``torch.autocast('cpu', float16)``) and a
``torch.amp.GradScaler('cpu')``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunelab.train import loop
from tunelab.train.loop import train
from tunelab.train.state_io import read_state

INIT_SCALE = 2.0**10


@pytest.fixture()
def cpu_fp16(monkeypatch):
    """Call it to make every later ``train`` in the test run in fp16 with a grad scaler."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    def fp16_accelerator(*args, **kwargs):
        AcceleratorState._reset_state(reset_partial_state=True)
        acc = Accelerator(cpu=True, mixed_precision="fp16")
        acc.native_amp = True  # accelerate leaves fp16 off on CPU; torch autocasts fp16 there
        acc.scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
        return acc

    return lambda: monkeypatch.setattr(loop, "_accelerator", fp16_accelerator)


def _steps(run_dir: str) -> list[dict]:
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "grad_norm" in r]


@pytest.mark.parametrize("clip", ["1.0", "null"])
def test_fp16_grad_norms_are_unscaled(make_config, cpu_fp16, clip):
    base = ["training.max_steps=3", f"training.max_grad_norm={clip}"]
    fp32 = _steps(train(make_config("name=fp32", *base)).run_dir)
    cpu_fp16()
    fp16 = _steps(train(make_config("name=fp16", *base)).run_dir)
    assert [r["step"] for r in fp16] == [r["step"] for r in fp32] == [1, 2, 3]
    for a, b in zip(fp32, fp16, strict=True):
        # scaled gradients would log a norm INIT_SCALE (1024x) larger; fp16 rounding is ~1e-3
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=2e-2), (a, b)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-2)
    assert all(r["loss_scale"] == INIT_SCALE for r in fp16)  # no overflow: every step was taken


def test_fp16_overflow_lowers_the_scale_and_is_not_a_bad_step(make_config, monkeypatch, cpu_fp16):
    from tunelab.methods.sft import SFT

    real_loss = SFT.loss
    calls = {"n": 0}

    def overflow_once(self, model, batch):
        calls["n"] += 1
        loss, metrics = real_loss(self, model, batch)
        # finite in fp32, but its scaled gradients overflow fp16 in backward
        return (loss * 2.0**40 if calls["n"] == 2 else loss), metrics

    monkeypatch.setattr(SFT, "loss", overflow_once)
    cpu_fp16()
    config = make_config(
        "name=overflow", "training.max_steps=5", "training.max_bad_steps=1",
        "training.save_every=1", "training.keep_last=10",
    )
    result = train(config)  # max_bad_steps=1: a bad step would stop the run
    assert result.steps == 5 and result.skipped_steps == 0 and result.overflow_steps == 1
    rows = {r["step"]: r for r in _steps(result.run_dir)}
    assert rows[1]["loss_scale"] == INIT_SCALE and "overflow" not in rows[1]
    assert rows[2]["overflow"] is True and rows[2]["loss_scale"] == INIT_SCALE / 2
    assert all(rows[s]["loss_scale"] == INIT_SCALE / 2 for s in (3, 4, 5))
    assert all(torch.isfinite(torch.tensor(rows[s]["grad_norm"])) for s in (1, 3, 4, 5))
    ckpt = config.run_dir() / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-1", "step-3", "step-4", "step-5"]  # none of a skipped step
    w1, w3 = (load_file(str(ckpt / f"step-{s}" / "trainable.safetensors")) for s in (1, 3))
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)  # training went on after the overflow
    state = read_state(ckpt / "step-3")
    adam_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {2}  # steps 1 and 3 updated the weights; the overflowing step 2 did not
    assert state["scheduler"]["last_epoch"] == 3 and state["bad_in_a_row"] == 0 and state["overflow_steps"] == 1
    assert state["scaler"]["scale"] == INIT_SCALE / 2  # a resume continues at the lowered scale
    longer = make_config("name=overflow", "training.max_steps=6", "training.save_every=1", "training.keep_last=10")
    resumed = _steps(train(longer, resume=True).run_dir)
    assert resumed[-1]["step"] == 6 and resumed[-1]["loss_scale"] == INIT_SCALE / 2
