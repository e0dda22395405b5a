"""Atomic checkpoints and resume.

A checkpoint is written to ``checkpoints/step-N.tmp/``, every file fsynced, the folder renamed
to ``step-N/``, and only then a ``COMPLETE`` marker is written. Resume takes the newest folder
with the marker, so a run killed at any instant (even mid-write) resumes from the last
checkpoint that was fully on disk. Trainable weights are safetensors; optimizer, scheduler,
RNG, sampler and method state are safetensors + JSON (:mod:`tunelab.train.state_io`): no
checkpoint file is a pickle, so loading one never runs code.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.errors import CheckpointError
from tunelab.train.state_io import read_state, save_state

MARKER = "COMPLETE"


@dataclass
class TrainState:
    """Everything besides the weights that a resume restores."""

    step: int
    optimizer: dict
    scheduler: dict
    sampler: dict
    method: dict
    bad_in_a_row: int
    bad_total: int
    tokens_seen: int
    rng: dict
    #: fp16 overflow steps the grad scaler skipped (defaults: checkpoints written before these fields).
    overflow_steps: int = 0
    #: the fp16 grad scaler's state (its current scale), empty without one.
    scaler: dict = field(default_factory=dict)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def gathered_trainable(model: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trainable entries of a gathered full state dict, under the unwrapped model's names.

    FSDP names a parameter with its wrappers' prefixes; they are dropped so that the names match
    ``model.named_parameters()`` of a plain model (and :func:`load_checkpoint`).
    """
    wrappers = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")

    def plain(name: str) -> str:
        for prefix in wrappers:
            name = name.replace(prefix, "")
        return name

    full = {plain(k): v for k, v in weights.items()}
    names = [plain(n) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n in names if n not in full]
    if missing:
        raise CheckpointError(
            f"the gathered state dict lacks {len(missing)} trainable parameter(s) (e.g. {missing[0]}).\n"
            "  fix: save full state: fsdp_state_dict_type FULL_STATE_DICT, or DeepSpeed ZeRO-3 with "
            "stage3_gather_16bit_weights_on_model_save: true (presets/examples/accelerate/)"
        )
    return {n: full[n].detach().to("cpu").contiguous().clone() for n in names}


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: Path, model: nn.Module, state: TrainState, keep_last: int, *, weights: dict[str, torch.Tensor] | None = None
) -> Path:
    """Write ``root/step-N`` atomically and keep only the newest ``keep_last`` complete ones.

    ``weights``: the full state dict gathered from shards (FSDP / DeepSpeed ZeRO-3); its trainable
    entries are saved, so the checkpoint loads in one process like any other.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step}"
    tmp = root / f"step-{state.step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    trainable = trainable_state(model) if weights is None else gathered_trainable(model, weights)
    save_file(trainable, str(tmp / "trainable.safetensors"))
    save_state(state.__dict__, tmp)
    _fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (final / MARKER).write_text("ok\n")
    _fsync_tree(final)
    for old in complete_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (incomplete and .tmp folders are ignored)."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith("step-") and (path / MARKER).exists():
            try:
                found.append((int(path.name.split("-", 1)[1]), path))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


def _check_same_parameters(path: Path, weights: dict[str, torch.Tensor], params: dict[str, nn.Parameter]) -> None:
    """Refuse a checkpoint whose tensors are not exactly the model's trainable parameters.

    A trainable parameter absent from the checkpoint would silently keep its fresh
    initialisation and the "resumed" run would train a different model.
    """
    fix = "  fix: resume with the config the checkpoint was written with, or start a new run (name=<new-name>)"
    extra = [n for n in weights if n not in params]
    if extra:
        raise CheckpointError(
            f"{path}: {len(extra)} saved tensor(s) do not exist in the model (e.g. {extra[0]}); "
            f"the config changed since the checkpoint was written.\n{fix}"
        )
    absent = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if absent:
        raise CheckpointError(
            f"{path}: {len(absent)} trainable parameter(s) are missing from the checkpoint (e.g. {absent[0]}); "
            f"the config changed since the checkpoint was written.\n{fix}"
        )
    resized = [n for n, t in weights.items() if t.shape != params[n].shape]
    if resized:
        name = resized[0]
        raise CheckpointError(
            f"{path}: {name} is {tuple(weights[name].shape)} in the checkpoint but "
            f"{tuple(params[name].shape)} in the model.\n{fix}"
        )


def load_checkpoint(path: Path, model: nn.Module) -> TrainState:
    """Restore trainable weights into ``model`` and return the rest of the state."""
    if not (path / MARKER).exists():
        raise CheckpointError(f"{path} is incomplete (no {MARKER} marker); it cannot be resumed from")
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    _check_same_parameters(path, weights, params)
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    raw: dict[str, Any] = read_state(path)
    return TrainState(**raw)
