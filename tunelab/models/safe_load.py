"""Safe loading: weights come from safetensors, never from a pickle, unless the user opts in.

Why: a ``pytorch_model.bin`` / ``adapter_model.bin`` / ``.pt`` file is a Python pickle, and
unpickling can run arbitrary code (the model-file flavour of a supply-chain attack, OWASP
LLM03). safetensors is a plain header + tensor bytes and cannot. So every model, adapter and
checkpoint load in tunelab first asks :func:`check_weights_folder`, which refuses a folder whose
weights exist only as pickles and names the file and the opt-in; transformers is then called with
``use_safetensors=True`` as a second lock.

The opt-in is explicit and scoped: ``model.allow_pickle: true`` in a run config, or
``--allow-pickle`` on ``tunelab train/chat/serve/export``, which wraps the command in
:func:`pickle_allowed` so that nested loads (a run used as a base model merges its adapter; a
served extra adapter) follow the same decision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from tunelab.errors import ModelError

#: Suffixes of files that torch / transformers / peft read with pickle.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

#: Suffixes of safetensors weights (single file, or the index of a sharded set).
SAFE_SUFFIXES = (".safetensors", ".safetensors.index.json")

_ALLOWED: ContextVar[bool] = ContextVar("tunelab_allow_pickle", default=False)

#: ``--allow-pickle`` help, the same on every command that loads weights.
CLI_HELP = "Also load weights stored as pickles (.bin, .pt), which can run code when loaded: only files you trust."

FIX = (
    "  fix: convert it to safetensors once, where you trust it (load it and save_pretrained(): transformers and "
    "peft write safetensors), or, if you trust its source, pass --allow-pickle (config: model.allow_pickle=true)"
)


@contextmanager
def pickle_allowed(allowed: bool = True) -> Iterator[None]:
    """Within the block, pickle weights may load when ``allowed`` (an outer opt-in is kept)."""
    token = _ALLOWED.set(allowed or _ALLOWED.get())
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def pickle_is_allowed(explicit: bool = False) -> bool:
    """True when the caller (``explicit``, e.g. ``model.allow_pickle``) or the command opted in."""
    return explicit or _ALLOWED.get()


def pickle_files(folder: Path) -> list[str]:
    """Names of the files in ``folder`` that would be read with pickle (sorted)."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(PICKLE_SUFFIXES))


def check_weights_folder(folder: Path, what: str, *, allow: bool = False) -> bool:
    """Refuse ``folder`` when its weights exist only as pickles, unless pickles are allowed.

    Args:
        folder: a model folder (``config.json`` + weights) or a peft adapter folder.
        what: how the message names the folder ("model 'x'", "adapter").
        allow: the caller's own opt-in (``model.allow_pickle``); the command's opt-in
            (:func:`pickle_allowed`) counts too.

    Returns:
        True when the folder has safetensors weights (load with ``use_safetensors=True``), False
        when it has only pickles and they are allowed (let the library fall back to them).

    Raises:
        ModelError: only pickle weights and no opt-in; names the file(s) and ``--allow-pickle``.
    """
    if not folder.is_dir() or any(p.name.endswith(SAFE_SUFFIXES) for p in folder.iterdir()):
        return True
    found = pickle_files(folder)
    if not found:
        return True  # no weights at all: the library's own "no weights found" error is the clear one
    if pickle_is_allowed(allow):
        return False
    raise ModelError(
        f"{what} at {folder} has its weights only as a pickle ({', '.join(found)}); unpickling can run "
        "arbitrary code, so tunelab loads safetensors only.\n" + FIX
    )
