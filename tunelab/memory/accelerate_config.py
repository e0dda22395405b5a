"""Which planner sharding an accelerate config file means (``tunelab plan --gpus N --sharding S``).

The configs in ``presets/examples/accelerate/`` (and any written by ``accelerate config``) name
their engine in accelerate's words; the planner (:mod:`tunelab.memory.sharding`) in ZeRO's
(Rajbhandari et al. 2020, arXiv:1910.02054): DDP keeps a replica per GPU; ZeRO-2 shards
gradients and optimizer state; ZeRO-3 also the parameters. FSDP's FULL_SHARD (FSDP2:
``reshard_after_forward: true``) is ZeRO-3; SHARD_GRAD_OP (``false``) keeps parameters whole
between forward and backward and is ZeRO-2; HYBRID_SHARD shards within a node (ZeRO-3 there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import ConfigError

#: FSDP1 sharding strategy -> planner sharding (per GPU within the sharding group).
FSDP_STRATEGIES = {
    "FULL_SHARD": "zero3",
    "HYBRID_SHARD": "zero3",
    "SHARD_GRAD_OP": "zero2",
    "HYBRID_SHARD_ZERO2": "zero2",
    "NO_SHARD": "ddp",
}
DEEPSPEED_STAGES = {0: "ddp", 1: "zero1", 2: "zero2", 3: "zero3"}


@dataclass(frozen=True)
class PlannerSharding:
    """The planner's ``--sharding``, ``--gpus`` and ``--offload`` for an accelerate config."""

    sharding: str
    gpus: int
    offload: bool


def _fsdp(cfg: dict[str, Any]) -> tuple[str, bool]:
    fsdp = cfg.get("fsdp_config") or {}
    reshard = fsdp.get("fsdp_reshard_after_forward", fsdp.get("fsdp_sharding_strategy", "FULL_SHARD"))
    if isinstance(reshard, bool):  # FSDP2
        mode = "zero3" if reshard else "zero2"
    elif str(reshard).upper() in FSDP_STRATEGIES:
        mode = FSDP_STRATEGIES[str(reshard).upper()]
    else:
        raise ConfigError(f"fsdp_config: unknown sharding strategy {reshard!r}; valid: {', '.join(FSDP_STRATEGIES)}")
    return mode, bool(fsdp.get("fsdp_offload_params", False))


def _deepspeed(cfg: dict[str, Any]) -> tuple[str, bool]:
    ds = cfg.get("deepspeed_config") or {}
    stage = int(ds.get("zero_stage", 2))
    if stage not in DEEPSPEED_STAGES:
        raise ConfigError(f"deepspeed_config.zero_stage: {stage} is not 0-3")
    offload = any(
        str(ds.get(k, "none")).lower() not in ("none", "") for k in ("offload_optimizer_device", "offload_param_device")
    )
    return DEEPSPEED_STAGES[stage], offload


def planner_sharding(cfg: dict[str, Any]) -> PlannerSharding:
    """The planner mode of a parsed accelerate config.

    Raises:
        ConfigError: a distributed type or strategy the planner does not model.
    """
    kind = str(cfg.get("distributed_type", "NO")).upper()
    gpus = int(cfg.get("num_processes", 1))
    if kind == "FSDP":
        mode, offload = _fsdp(cfg)
    elif kind == "DEEPSPEED":
        mode, offload = _deepspeed(cfg)
    elif kind in ("MULTI_GPU", "MULTI_CPU", "NO"):
        mode, offload = ("ddp" if gpus > 1 else "none"), False
    else:
        raise ConfigError(
            f"distributed_type: {kind} is not modelled by the planner; valid: NO, MULTI_GPU, FSDP, DEEPSPEED"
        )
    return PlannerSharding(mode, gpus, offload)


def read_accelerate_config(path: Path) -> PlannerSharding:
    """:func:`planner_sharding` of a YAML file."""
    import yaml

    try:
        cfg = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not a readable accelerate config ({err}).\n  fix: pass a YAML file") from err
    return planner_sharding(cfg)
