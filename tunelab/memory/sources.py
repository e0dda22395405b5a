"""Where architecture facts come from: presets, a model folder's config.json, or a run folder.

Order tried for ``--model NAME``: a run folder (``runs/NAME`` with ``config.yaml``: its model,
adapter and method), a preset name from ``tunelab/presets/models.json``, then
:func:`tunelab.models.resolve.resolve_model` (``tiny``, the bundled model, local folders, the
HF cache). Files are read with ``json``/``yaml`` only, so planning never imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tunelab.errors import ConfigError, ModelError
from tunelab.memory.arch import Architecture, architecture_from_config
from tunelab.presets import preset_path


@dataclass(frozen=True)
class ModelSource:
    """An architecture and, for a run folder, the run's own settings (its config.yaml tree)."""

    arch: Architecture
    origin: str
    run_config: dict[str, Any] | None = None
    run_precision: dict[str, Any] | None = None  # the run's precision.json: the dtype the loop chose and measured


@cache
def _presets() -> dict[str, Any]:
    return json.loads(preset_path("models.json").read_text())


def preset_names() -> list[str]:
    return sorted(_presets()["models"])


def preset_architecture(name: str) -> Architecture | None:
    """The preset called ``name`` (case-insensitive, aliases allowed), or None."""
    data = _presets()
    key = name.lower()
    key = data["aliases"].get(key, key)
    entry = data["models"].get(key)
    if entry is None:
        return None
    return architecture_from_config(entry["config"], source=f"preset {key}", name=key)


def _read_config_json(folder: Path, name: str) -> Architecture:
    path = folder / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the model config ({err})") from err
    return architecture_from_config(cfg, source=str(path), name=name)


def _run_source(folder: Path) -> ModelSource:
    import yaml

    path = folder / "config.yaml"
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the run config ({err})") from err
    model_name = (tree.get("model") or {}).get("name")
    if not model_name:
        raise ConfigError(f"{path}: has no model.name")
    trained = folder / "model"
    base = _read_config_json(trained, model_name) if (trained / "config.json").is_file() else load_model_source(
        model_name
    ).arch
    return ModelSource(base, f"run {folder}", tree, _read_precision(folder / "precision.json"))


def _read_precision(path: Path) -> dict[str, Any] | None:
    """The loop's saved precision choice (absent in runs made before it was saved)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_model_source(name: str) -> ModelSource:
    """Architecture for ``name``: run folder, preset, or a model tunelab can resolve offline.

    Raises:
        ConfigError: nothing matches (lists presets and what else was tried).
    """
    path = Path(name).expanduser()
    if (path / "config.yaml").is_file():
        return _run_source(path)
    arch = preset_architecture(name)
    if arch is not None:
        return ModelSource(arch, f"preset {arch.name}")
    from tunelab.models.resolve import resolve_model

    try:
        resolved = resolve_model(name)
    except ModelError as err:
        raise ConfigError(
            f"--model: '{name}' is not a run folder or a preset, and {err}\n"
            f"  presets: {', '.join(preset_names())}"
        ) from None
    return ModelSource(_read_config_json(resolved.path, name), f"{resolved.kind} {resolved.path}")
