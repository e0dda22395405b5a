"""Typed configuration of ``tunelab prune``: what to prune, the data it is scored and measured on,
and the recovery run.

A prune is described by :class:`PruneConfig` (a YAML file such as ``examples/prune.yaml``, CLI
flags, or both: flags win). It reuses the run config's sections, so the model, the calibration
data and the recovery run's adapter and training loop take exactly the fields ``tunelab train``
takes (``tunelab config explain`` documents them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from tunelab.config import AdapterArgs, DataArgs, ModelArgs, Section, TrainArgs, apply_overrides
from tunelab.errors import ConfigError

PruneMethod = Literal["depth", "width", "depth+width", "magnitude"]
Recovery = Literal["lora", "distill", "none"]


class PruneArgs(Section):
    """What is removed."""

    method: PruneMethod = Field(
        "depth",
        description="depth: drop whole decoder layers (lowest angular distance); width: drop MLP channels (lowest "
        "activation contribution); depth+width: drop layers, then narrow the MLPs of the rest (scored again); "
        "magnitude: zero the smallest weights (masks: shrinks neither file nor decode time).",
    )
    drop_layers: int | None = Field(
        None, ge=1, description="depth, depth+width: how many layers to drop (the lowest-scoring)."
    )
    layers: list[int] | None = Field(None, description="depth: drop exactly these layer indices instead of scoring.")
    keep: float = Field(
        0.75,
        gt=0,
        description="width: MLP channels kept per layer, a fraction (0, 1] (rounded to 64 channels, llama.cpp's "
        "fast width on AVX-512) or a count (rounded to 32, GGUF's block).",
    )
    refit: bool = Field(
        True,
        description="width, depth+width: refit each narrowed down_proj by least squares on the calibration "
        "activations, so the kept channels take over what the removed ones added (no training).",
    )
    sparsity: float = Field(0.5, ge=0, lt=1, description="magnitude: fraction of decoder linear weights zeroed.")
    scope: Literal["global", "layer"] = Field(
        "global", description="magnitude: one threshold over all matrices (global) or the same sparsity in each."
    )
    calib_rows: int = Field(128, ge=1, description="Calibration examples that score layers / channels.")

    def check(self) -> None:
        """Refuse a prune that cannot run, before any model loads."""
        if self.method in ("depth", "depth+width") and self.drop_layers is None and not self.layers:
            raise ConfigError(
                f"prune.method {self.method} needs prune.drop_layers (a count) or prune.layers (indices).\n"
                "  fix: pass --drop-layers N (the N lowest-scoring layers go) or --layers 3,5"
            )


class RecoverArgs(Section):
    """The short run after pruning that closes the perplexity gap (through the one training loop)."""

    recover: Recovery = Field(
        "lora",
        description="lora: SFT of the pruned model on the data (adapter below, LoRA by default); distill: "
        "distillation from the unpruned model (method: distill); none: no recovery.",
    )
    adapter: AdapterArgs = Field(
        default_factory=lambda: AdapterArgs(type="lora", r=16, alpha=32.0),
        description="What the recovery run trains (lora or full); merged into the saved model.",
    )
    training: TrainArgs = Field(
        default_factory=lambda: TrainArgs(max_steps=100, learning_rate=2e-4, warmup_steps=5),
        description="The recovery run's loop (training.max_steps = --recover-steps).",
    )
    method_args: dict[str, Any] = Field(
        default_factory=dict,
        description="distill: options of method: distill (loss, temperature, alpha ...); the teacher is the "
        "unpruned model.",
    )


class PruneConfig(Section):
    """One prune: model → pruned (+ recovered) model folder with a report."""

    model: ModelArgs = Field(default_factory=ModelArgs, description="The model or run folder to prune.")
    prune: PruneArgs = Field(default_factory=PruneArgs)
    data: DataArgs = Field(
        default_factory=lambda: DataArgs(validation_split=0.1),
        description="Calibration data (data.path = --calib): its train split scores and recovers, its "
        "validation split is the held-out set for perplexity.",
    )
    recover: RecoverArgs = Field(default_factory=RecoverArgs)
    out: str | None = Field(None, description="Output folder (default pruned/<model>-<method>).")

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("pruned") / f"{Path(self.model.name).name}-{self.prune.method}"


def load_prune_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PruneConfig:
    """Read a prune YAML (or the defaults), apply ``key.path=value`` overrides, validate.

    Raises:
        ConfigError: unreadable YAML or any invalid field (all problems listed at once).
    """
    tree: dict = {}
    source = "defaults"
    if path is not None:
        p, source = Path(path), str(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}\n  fix: pass a YAML file, e.g. examples/prune.yaml")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML ({getattr(err, 'problem', err)})") from err
        if not isinstance(tree, dict):
            raise ConfigError(f"{p}: the top level must be a mapping (model:, prune:, data:, recover:)")
    if overrides:
        tree = apply_overrides(tree, overrides)
        source += " + flags"
    try:
        return PruneConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None


def _fields_at(loc: tuple) -> list[str]:
    model: type[BaseModel] = PruneConfig
    for part in loc[:-1]:
        annotation = getattr(model.model_fields.get(str(part)), "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _format(err: ValidationError, source: str) -> str:
    """One line per problem (key path, value given, what is valid); a fix line pointing at the docs."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key; valid keys here: {', '.join(_fields_at(tuple(e['loc'])))}")
        else:
            lines.append(f"  {key}: {e.get('input')!r} — {e['msg']}")
    return "\n".join(
        [
            f"invalid prune config ({source}): {len(lines)} problem(s)",
            *lines,
            "  fix: see `tunelab prune --help` and docs/compress.md (model/data/adapter/training fields as in "
            "`tunelab config explain`)",
        ]
    )
