"""``tunelab prune``: load → measure → prune → measure → recover → measure → save a model folder.

Each stage reports the parameter count, the planner's inference memory (:mod:`tunelab.memory`:
bf16 weights + KV cache of a 2048-token context) and the perplexity on the held-out split of the
data (:mod:`tunelab.compress.calib`). Recovery is an ordinary training run through the one loop
(:func:`tunelab.train.loop.train`): SFT with an adapter (``recover: lora``) or distillation from
the unpruned model (``recover: distill``, :mod:`tunelab.methods.distill`), merged afterwards.

The output folder is a finished *run folder* whose ``model/`` is a plain Hugging Face folder
(config with the new ``num_hidden_layers`` / ``intermediate_size``; ``AutoModelForCausalLM``
loads it), so everything that takes a run takes it: ``tunelab export OUT --format gguf --verify``,
``tunelab serve OUT``, ``tunelab chat OUT``, and ``model.name: OUT`` in a training config::

    OUT/
      model/              the pruned (and recovered) model: weights, config, tokenizer, chat template
      config.yaml         makes OUT a run folder (model/ is its result)
      prune.json          the report: stages, what was removed, scores, the recovery run
      pruned/             with recovery: the pruned model before recovery (the recovery run's base)
      recovery/           with recovery: the recovery run (metrics.jsonl, loss.png, adapter/)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tunelab.compress.calib import CalibrationSet, load_calibration, perplexity
from tunelab.compress.config import PruneConfig
from tunelab.errors import ConfigError

#: The planner's serving setting for the memory column (bf16 weights, one 2048-token sequence).
PLAN_CONTEXT = 2048


@dataclass
class Stage:
    """One row of the report."""

    name: str  # base | pruned | recovered
    params: int
    planned_gib: float | None  # inference memory from the planner; None for a family it does not know
    weights_gib: float | None  # the planner's weights row (bf16)
    perplexity: float
    sparsity: float | None = None  # magnitude: fraction of zeros in the decoder's linear weights


@dataclass
class PruneReport:
    source: str
    method: str
    out: str
    stages: list[Stage]
    removed: dict[str, Any]  # what went: layers + scores, channels, or sparsity
    recovery: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def model_dir(self) -> str:
        return str(Path(self.out) / "model")


def planned_gib(model: Any) -> tuple[float | None, float | None]:
    """``(total, weights)``: the planner's inference memory for the model's config (GiB); None for an unknown family."""
    from tunelab.memory import GIB
    from tunelab.memory.arch import architecture_from_config
    from tunelab.memory.inference import InferSpec, plan_inference

    try:
        arch = architecture_from_config(model.config.to_dict())
    except ConfigError:
        return None, None
    plan = plan_inference(InferSpec(arch, weight_format="bf16", context=PLAN_CONTEXT))
    return plan.total / GIB, plan.weights / GIB


def measure(name: str, model: Any, data: CalibrationSet, sparse: bool = False) -> Stage:
    from tunelab.compress.magnitude import sparsity_of

    total, weights = planned_gib(model)
    return Stage(
        name,
        int(model.num_parameters()),
        total,
        weights,
        perplexity(model, data),
        sparsity_of(model) if sparse else None,
    )


def load_source(config: PruneConfig) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in fp32: a run is merged first (its trained chat template kept), a name is loaded."""
    from tunelab.models.load import load_model

    path = Path(config.model.name)
    if (path / "config.yaml").is_file():
        from tunelab.models.merge import load_merged

        merged = load_merged(path)
        return merged.model, merged.tokenizer
    model, tokenizer = load_model(config.model.model_copy(update={"dtype": "fp32", "quantization": "none"}))
    return model.eval(), tokenizer


def apply_prune(model: Any, config: PruneConfig, data: CalibrationSet) -> dict[str, Any]:
    """Prune ``model`` in place as ``config.prune`` says; returns what was removed (for the report)."""
    args = config.prune
    removed: dict[str, Any] = {}
    if args.method in ("depth", "depth+width"):
        from tunelab.compress.prune import drop_layers, layer_scores, lowest

        scores = layer_scores(model, data.batches())
        drop = sorted(args.layers) if args.layers else lowest(scores, args.drop_layers)
        drop_layers(model, drop)
        removed = {"layers_before": len(scores), "dropped_layers": drop, "layer_scores": [round(s, 6) for s in scores]}
    if args.method in ("width", "depth+width"):  # after a depth prune, the channels are scored in the shorter model
        from tunelab.compress import width
        from tunelab.compress.prune import text_config

        before = text_config(model).intermediate_size
        keep = width.kept_width(before, args.keep)
        tokens = sum(len(row.input_ids) for row in data.calibration)
        refit = args.refit and width.enough_for_refit(tokens, before)
        grams = width.down_grams(model, data.batches()) if refit else None
        scores = width.channel_importance(model, data.batches(), grams)
        width.prune_channels(model, width.channels_to_keep(scores, keep), grams)
        removed.update(intermediate_size_before=before, intermediate_size=keep, refit=refit)
        if args.refit and not refit:
            removed["refit_skipped"] = (
                f"refit skipped: {tokens} calibration tokens are fewer than {width.REFIT_TOKENS_PER_CHANNEL} per MLP "
                f"channel ({before}); a least-squares fit on so few overfits them. fix: more --calib-rows or data"
            )
    if removed:
        return removed
    from tunelab.compress.magnitude import apply_masks, magnitude_masks

    masks = magnitude_masks(model, args.sparsity, args.scope)
    apply_masks(model, masks)
    return {"sparsity": args.sparsity, "scope": args.scope, "masks": masks}


def _save(model: Any, tokenizer: Any, folder: Path) -> None:
    from tunelab.models.merge import MergedRun, eos_token_ids, save_hf_folder

    save_hf_folder(MergedRun(model, tokenizer, None, eos_token_ids(tokenizer, model.generation_config)), folder)


def recovery_config(config: PruneConfig, base: Path, runs: Path) -> Any:
    """The recovery run: the pruned model (``base``) trained on the data's train split, in ``runs/recovery``."""
    from tunelab.config import RunConfig
    from tunelab.methods import METHODS

    recover = config.recover
    adapter = recover.adapter
    if adapter.type == "freeze" and "freeze_train_layers" not in adapter.model_fields_set:
        # recovery repairs every layer: all of them train, only the (often tied) embeddings stay frozen
        layers = json.loads((base / "config.json").read_text())
        layers = layers.get("text_config", layers)["num_hidden_layers"]
        adapter = adapter.model_copy(update={"freeze_train_layers": layers})
    method_args = dict(recover.method_args)
    method = "sft"
    if recover.recover == "distill":
        if "distill" not in METHODS:
            raise ConfigError(
                "--recover distill needs method: distill, which this install lacks.\n  fix: --recover lora"
            )
        method = "distill"
        method_args.setdefault("teacher", config.model.name)
    try:
        return RunConfig(
            method=method,
            name="recovery",
            output_dir=str(runs),
            model=config.model.model_copy(update={"name": str(base), "dtype": "auto"}),
            adapter=adapter,
            data=config.data,
            training=recover.training,
            method_args=method_args,
        )
    except ValidationError as err:  # the recover section's fields, checked as a run config
        raise ConfigError(f"invalid recover section: {err}\n  fix: see docs/compress.md") from None


def recover_model(config: PruneConfig, base: Path, runs: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Run the recovery and merge it; returns ``(model, tokenizer, summary)``."""
    from tunelab.models.load import load_run
    from tunelab.train.loop import train

    run_config = recovery_config(config, base, runs)
    result = train(run_config)
    loaded = load_run(result.run_dir, device="cpu", dtype="fp32", merge=True)
    summary = {
        "method": run_config.method,
        "adapter": run_config.adapter.type,
        "steps": result.steps,
        "max_steps": run_config.training.max_steps,
        "max_minutes": run_config.training.max_minutes,
        "wall_s": round(result.wall_s, 1),
        "val_ppl": result.val.get("val_ppl"),
        "run": "recovery",
    }
    return loaded.model, loaded.tokenizer, summary


def _relocate_run(run: Path, tmp: Path, out: Path) -> None:
    """Point a run folder's config.yaml at ``out`` (it was written while ``out`` was still ``tmp``)."""
    from tunelab.config import load_config, save_config

    config = load_config(run / "config.yaml")
    config.output_dir = str(out)
    config.model.name = config.model.name.replace(str(tmp), str(out))
    save_config(config, run / "config.yaml")


def write_run_files(config: PruneConfig, folder: Path, out: Path, tokenizer: Any) -> None:
    """``config.yaml`` (OUT is a run folder whose result is model/) and the trained chat template."""
    from tunelab.config import AdapterArgs, RunConfig, save_config
    from tunelab.models.load import TRAINED_TEMPLATE

    run = RunConfig(
        name=out.name,
        output_dir=str(out.parent),
        model=config.model,
        data=config.data,
        adapter=AdapterArgs(type="full"),
    )
    save_config(run, folder / "config.yaml")
    if tokenizer.chat_template:
        (folder / TRAINED_TEMPLATE).write_text(tokenizer.chat_template, encoding="utf-8")


def prune(config: PruneConfig, *, overwrite: bool = False, log: Callable[[str], None] = print) -> PruneReport:
    """Prune ``config.model`` as ``config`` says and write the output folder (see the module docstring).

    The folder is built beside ``out`` and renamed into place once complete.

    Raises:
        ConfigError / DataError / ModelError: bad options, data or model (nothing is left behind).
    """
    from tunelab.utils.fsio import atomic_folder

    config.prune.check()
    out = config.out_dir()
    with atomic_folder(out, overwrite) as tmp:
        model, tokenizer = load_source(config)
        data = load_calibration(config.data, tokenizer, config.prune.calib_rows)
        log(f"calibration: {len(data.calibration)} examples; held-out: {len(data.held_out)} examples")
        sparse = config.prune.method == "magnitude"
        stages = [measure("base", model, data, sparse)]
        removed = apply_prune(model, config, data)
        masks = removed.pop("masks", None)
        stages.append(measure("pruned", model, data, sparse))
        log(f"pruned ({config.prune.method}): {_describe(removed)}")
        if "refit_skipped" in removed:
            log(removed["refit_skipped"])
        recovery = None
        if config.recover.recover == "none":
            _save(model, tokenizer, tmp / "model")
        else:
            _save(model, tokenizer, tmp / "pruned")
            del model
            model, tokenizer, recovery = recover_model(config, tmp / "pruned", tmp)
            if masks is not None:  # a merged delta is dense: apply the masks again (the "squash" step)
                from tunelab.compress.magnitude import apply_masks

                apply_masks(model, masks)
            stages.append(measure("recovered", model, data, sparse))
            _save(model, tokenizer, tmp / "model")
            _relocate_run(tmp / "recovery", tmp, out)
        write_run_files(config, tmp, out, tokenizer)
        notes = [removed["refit_skipped"]] if "refit_skipped" in removed else []
        if sparse:
            notes.append("magnitude masks are zeros in dense weights: they shrink neither the file nor the decode time")
        report = PruneReport(config.model.name, config.prune.method, str(out), stages, removed, recovery, notes)
        (tmp / "prune.json").write_text(json.dumps(asdict(report), indent=2))
    return report


def _describe(removed: dict[str, Any]) -> str:
    parts = []
    if "dropped_layers" in removed:
        parts.append(f"dropped layers {removed['dropped_layers']} of {removed['layers_before']}")
    if "intermediate_size" in removed:
        parts.append(f"MLP channels {removed['intermediate_size_before']} → {removed['intermediate_size']} per layer")
    return "; ".join(parts) or f"{removed['sparsity']:.0%} of decoder linear weights zeroed ({removed['scope']})"
