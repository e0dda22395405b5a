"""tunelab: plan → prepare data → fine-tune → align → export → serve, from Python or the CLI.

The public API, importable from the top level::

    import tunelab

    config = tunelab.load_config("examples/sft-lora.yaml", ["training.max_steps=50"])
    result = tunelab.train_run(config)                 # -> RunResult (run_dir, final metrics)
    run = tunelab.load_run(result.run_dir)             # model + tokenizer + config of the run
    engine = tunelab.load_engine(str(result.run_dir))  # generation, as `tunelab chat` / `serve` use it
    tunelab.export_run(...)                            # HF folder, GGUF + Modelfile, bitsandbytes

Every name is imported on first use (module ``__getattr__``), so ``import tunelab`` costs almost
nothing and never imports torch: the config, the planner (``plan_training``, ``TrainSpec``) and
``load_config`` stay torch-free; the first access to a training, model or generation name
imports what it needs.

Naming: the functions are verbs that do not collide with the subpackages. ``tunelab.train``,
``tunelab.export``, ``tunelab.data``, ``tunelab.memory`` ... stay the *packages* (so
``import tunelab.train.loop`` and ``tunelab.memory.plan_training`` mean what they say), and the
functions are ``train_run`` (:func:`tunelab.train.loop.train`), ``export_run``
(:func:`tunelab.export.export`) and ``prepare_data`` (:func:`tunelab.data.prepare`).
"""

from __future__ import annotations

import importlib
from typing import Any

from tunelab.registry import Registry

#: Public name -> where it lives (imported on first access).
_API: Registry[Any] = Registry("public name", key="tunelab")
for _name, _target in {
    # configuration
    "RunConfig": "tunelab.config:RunConfig",
    "load_config": "tunelab.config:load_config",
    "save_config": "tunelab.config:save_config",
    # errors users catch
    "TunelabError": "tunelab.errors:TunelabError",
    "ConfigError": "tunelab.errors:ConfigError",
    "DataError": "tunelab.errors:DataError",
    "ModelError": "tunelab.errors:ModelError",
    "CheckpointError": "tunelab.errors:CheckpointError",
    "TrainingError": "tunelab.errors:TrainingError",
    "ServeError": "tunelab.errors:ServeError",
    "SecurityError": "tunelab.errors:SecurityError",
    # the registry type and the registries plugins add to
    "Registry": "tunelab.registry:Registry",
    "METHODS": "tunelab.methods:METHODS",
    "register_reward_function": "tunelab.methods.reward_functions:register_reward_function",
    "register_guardrail": "tunelab.serve.guardrails:register_guardrail",
    # memory planning (torch-free)
    "TrainSpec": "tunelab.memory.training:TrainSpec",
    "InferSpec": "tunelab.memory.inference:InferSpec",
    "MemoryEstimate": "tunelab.memory.estimate:MemoryEstimate",
    "plan_training": "tunelab.memory.training:plan_training",
    "plan_inference": "tunelab.memory.inference:plan_inference",
    "spec_from_config": "tunelab.memory.preflight:spec_from_config",
    # data, training, models
    "prepare_data": "tunelab.data:prepare",
    "train_run": "tunelab.train.loop:train",
    "RunResult": "tunelab.train.loop:RunResult",
    "resolve_model": "tunelab.models.resolve:resolve_model",
    "load_model": "tunelab.models.load:load_model",
    "load_run": "tunelab.models.load:load_run",
    "LoadedRun": "tunelab.models.load:LoadedRun",
    # generation, serving, export
    "load_engine": "tunelab.infer:load_engine",
    "SamplingParams": "tunelab.infer:SamplingParams",
    "create_app": "tunelab.serve:create_app",
    "run_server": "tunelab.serve:run_server",
    "ServerSettings": "tunelab.serve:ServerSettings",
    "export_run": "tunelab.export:export",
    "ExportOptions": "tunelab.export:ExportOptions",
    # compression
    "PruneConfig": "tunelab.compress.config:PruneConfig",
    "load_prune_config": "tunelab.compress.config:load_prune_config",
    "prune_model": "tunelab.compress.pipeline:prune",
}.items():
    _API.lazy(_name, _target)
del _name, _target

#: Subpackages reachable as attributes after a bare ``import tunelab`` (imported on first access).
_SUBPACKAGES = frozenset(
    {"cli", "config", "data", "errors", "export", "infer", "memory", "methods", "models", "paths", "presets",
     "registry", "serve", "train", "utils"}
)

__all__ = ["__version__", *_API.names()]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("tunelab")
        except PackageNotFoundError:  # a source tree that was never installed
            value = "0+unknown"
    elif name in _API:
        value = _API.get(name)
    elif name in _SUBPACKAGES:
        return importlib.import_module(f"tunelab.{name}")
    else:
        raise AttributeError(f"module 'tunelab' has no attribute {name!r}")
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBPACKAGES})
