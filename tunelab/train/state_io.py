"""Training state (optimizer, scheduler, sampler, RNG, method) as safetensors + JSON, not a pickle.

Why: ``torch.save`` writes a pickle, and a checkpoint folder is exactly what people copy between
machines and download to resume; loading a pickle can run code. Here the state tree is split
in two plain files: every tensor goes to ``state.safetensors`` (keyed ``t0, t1, ...``) and the
structure, with a placeholder per tensor, to ``state.json``. Loading parses JSON and tensor bytes
only, and gives back the same tree, types included, so a resume restores everything exactly:

* dict keys that are not strings (the optimizer's ``state`` is keyed by parameter index) and
  tuples (``random.getstate()``, Adam's ``betas``) are tagged, so they come back as ints and
  tuples, not strings and lists;
* floats are written with ``repr`` precision by ``json`` (so they round-trip bit for bit), and
  ``inf``/``nan`` (a grad scaler's state may hold them) as JSON's ``Infinity``/``NaN``;
* any other object is refused with the path of the offending entry, instead of being pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tunelab.errors import CheckpointError
from tunelab.models.safe_load import pickle_is_allowed

STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
LEGACY_STATE = "state.pt"
FORMAT = 1

_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"  # tags of values JSON cannot say
_TAGS = (_TENSOR, _TUPLE, _ITEMS)


def _encode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().to("cpu").contiguous().clone()  # clone: safetensors refuses shared storage
        return {_TENSOR: key}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not any(k in _TAGS for k in value):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in value.items()}
        items = [[_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")] for k, v in value.items()]
        return {_ITEMS: items}
    raise CheckpointError(
        f"training state entry {where} is a {type(value).__name__}, which cannot be saved without pickle.\n"
        "  fix: make that state_dict() return tensors, numbers, strings, lists, tuples and dicts only"
    )


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if _TENSOR in value:
        return tensors[value[_TENSOR]]
    if _TUPLE in value:
        return tuple(_decode(v, tensors) for v in value[_TUPLE])
    if _ITEMS in value:
        return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in value[_ITEMS]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def save_state(state: dict[str, Any], folder: Path) -> None:
    """Write ``state`` as ``folder/state.json`` + ``folder/state.safetensors``."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "state")
    (folder / STATE_JSON).write_text(json.dumps({"format": FORMAT, "state": tree}), encoding="utf-8")
    save_file(tensors, str(folder / STATE_TENSORS))


def read_state(folder: Path) -> dict[str, Any]:
    """The training state of checkpoint ``folder``; a pickled ``state.pt`` (tunelab before safetensors
    state) only with the ``--allow-pickle`` opt-in, and then through torch's ``weights_only`` loader."""
    if (folder / STATE_JSON).is_file():
        return load_state(folder)
    legacy = folder / LEGACY_STATE
    if not legacy.is_file():
        raise CheckpointError(f"{folder} has no {STATE_JSON}; it cannot be resumed from.\n  fix: start a new run")
    if not pickle_is_allowed():
        raise CheckpointError(
            f"{legacy} is a pickle (written by an older tunelab); unpickling can run code, so it is not loaded.\n"
            "  fix: if you wrote this checkpoint yourself, resume with --allow-pickle; otherwise start a new run"
        )
    return torch.load(legacy, weights_only=True)


def load_state(folder: Path) -> dict[str, Any]:
    """Read what :func:`save_state` wrote, with the same types (tensors on the CPU)."""
    meta = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{folder / STATE_JSON}: training-state format {meta.get('format')!r}, this tunelab reads {FORMAT}.\n"
            "  fix: resume with the tunelab version that wrote the checkpoint, or start a new run"
        )
    return _decode(meta["state"], load_file(str(folder / STATE_TENSORS)))
