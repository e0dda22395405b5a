"""The memory planner: pure arithmetic on architecture facts (never imports torch).

Public API: :func:`plan_training` / :class:`TrainSpec`, :func:`plan_inference` / :class:`InferSpec`,
:class:`MemoryEstimate`, :func:`seed_rule_bytes`, :func:`count_parameters`,
:func:`load_model_source`, :func:`find_fit`, and :func:`tunelab.memory.preflight.check_fits`
(imported from its module: it needs the run config).
"""

from tunelab.memory.arch import Architecture, ParamCounts, architecture_from_config, count_parameters
from tunelab.memory.estimate import GB, GIB, MemoryEstimate, seed_rule_bytes
from tunelab.memory.fit import FitResult, find_fit
from tunelab.memory.inference import InferSpec, plan_inference
from tunelab.memory.sources import ModelSource, load_model_source, preset_architecture, preset_names
from tunelab.memory.trainable import AdapterShape, Trainable, trainable
from tunelab.memory.training import TrainSpec, plan_training

__all__ = [
    "GB",
    "GIB",
    "AdapterShape",
    "Architecture",
    "FitResult",
    "InferSpec",
    "MemoryEstimate",
    "ModelSource",
    "ParamCounts",
    "TrainSpec",
    "Trainable",
    "architecture_from_config",
    "count_parameters",
    "find_fit",
    "load_model_source",
    "plan_inference",
    "plan_training",
    "preset_architecture",
    "preset_names",
    "seed_rule_bytes",
    "trainable",
]
