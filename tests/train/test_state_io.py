"""Checkpoint training state as safetensors + JSON: exact round trip, no pickle, exact resume.

The state tree has what JSON alone would lose (the optimizer's ``state`` keyed by int parameter
indices, tuples from ``random.getstate()`` and Adam's ``betas``, tensors of several dtypes,
inf/nan); a resume from it must equal the uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunelab.errors import CheckpointError
from tunelab.models.safe_load import pickle_allowed
from tunelab.train.loop import train
from tunelab.train.state_io import STATE_JSON, load_state, read_state, save_state


def _same(a, b) -> bool:
    """Equal values *and* types, tensors by dtype, shape and bits (nan == nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def test_round_trip_keeps_types_and_bits(tmp_path):
    random.seed(3)
    state = {
        "step": 7,
        "optimizer": {
            "state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.randn(3, 2)}, 1: {"step": torch.tensor(7.0)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1], "fused": None}],
        },
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        "scaler": {"scale": 65536.0, "growth_tracker": 0},
        "odd": {"__tensor__": "not a tag", (1, 2): [True, None, "x"]},
        "floats": [float("inf"), float("-inf"), float("nan"), 0.1 + 0.2, 1e-310],
        "dtypes": [torch.ones(2, dtype=d) for d in (torch.bfloat16, torch.float16, torch.int64, torch.uint8)],
        "empty": torch.zeros(0),
    }
    save_state(state, tmp_path)
    back = load_state(tmp_path)
    assert _same(back, state)
    assert isinstance(back["rng"]["python"], tuple) and isinstance(back["rng"]["python"][1], tuple)
    random.setstate(back["rng"]["python"])  # accepted as is
    assert sorted(back["optimizer"]["state"]) == [0, 1]
    # both files are plain data: JSON text and a safetensors file
    json.loads((tmp_path / STATE_JSON).read_text())
    assert len(load_file(str(tmp_path / "state.safetensors"))) == 9  # 3 optimizer, 1 rng, 4 dtypes, 1 empty


def test_an_object_is_refused_by_its_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"state\.method\.tracker is a object.*without pickle"):
        save_state({"method": {"tracker": object()}}, tmp_path)


def test_checkpoint_files_are_not_pickles(make_config):
    """Every file of a checkpoint is safetensors, JSON or the marker: no zip-pickle (``PK``) or raw
    pickle (``\\x80``) header, and no .pt/.bin names."""
    config = make_config("name=nopickle", "training.max_steps=2", "training.save_every=1", "training.keep_last=5")
    train(config)
    checkpoints = sorted((config.run_dir() / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-1", "step-2"]
    for folder in checkpoints:
        assert sorted(p.name for p in folder.iterdir()) == [
            "COMPLETE", "state.json", "state.safetensors", "trainable.safetensors"
        ]
        for path in folder.iterdir():
            assert not path.read_bytes()[:4].startswith((b"PK\x03\x04", b"\x80")), path


def test_resume_equals_uninterrupted_exactly(make_config):
    """3 steps, checkpoint, resume to 6 == 6 straight: weights, Adam moments and step counts, LR,
    sampler position and RNG (dropout on) all came back exactly from safetensors + JSON. The schedule
    is constant after warmup: a cosine one would depend on the 3-step run's own max_steps."""
    common = ["training.lr_scheduler=constant", "training.warmup_steps=2", "adapter.dropout=0.1",
              "training.keep_last=5"]
    straight = train(make_config("name=straight", "training.max_steps=6", "training.save_every=3", *common))
    train(make_config("name=split", "training.max_steps=3", "training.save_every=3", *common))
    resumed = train(make_config("name=split", "training.max_steps=6", "training.save_every=3", *common), resume=True)
    a, b = (load_file(str(Path(r.run_dir) / "adapter" / "adapter_model.safetensors")) for r in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (read_state(Path(r.run_dir) / "checkpoints" / "step-6") for r in (straight, resumed))
    assert _same(sa["optimizer"], sb["optimizer"]) and _same(sa["scheduler"], sb["scheduler"])
    assert _same(sa["sampler"], sb["sampler"]) and _same(sa["rng"], sb["rng"])


def test_legacy_pickled_state_needs_the_opt_in(make_config):
    config = make_config("name=legacy", "training.max_steps=1", "training.save_every=1")
    train(config)
    folder = config.run_dir() / "checkpoints" / "step-1"
    state = read_state(folder)
    torch.save(state, folder / "state.pt")  # what tunelab wrote before the safetensors state
    (folder / STATE_JSON).unlink()
    (folder / "state.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"(?s)state\.pt is a pickle.*--allow-pickle"):
        read_state(folder)
    with pickle_allowed():
        assert _same(read_state(folder), state)
