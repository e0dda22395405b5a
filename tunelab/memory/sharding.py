"""Multi-GPU memory: DDP replicas, ZeRO stages 1-3 / FSDP sharding over N GPUs, CPU offload.

ZeRO (Rajbhandari et al. 2020, arXiv:1910.02054, §5): stage 1 partitions the optimizer state,
stage 2 also the gradients, stage 3 (= FSDP full sharding) also the parameters, each over the
N data-parallel GPUs. DDP keeps a full replica per GPU plus its gradient buckets (a second
copy of the gradients unless ``gradient_as_bucket_view``). Offload moves the optimizer state
(and with stage 3 the parameters) to CPU RAM. Activations are per GPU and never sharded here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tunelab.errors import ConfigError


@dataclass(frozen=True)
class Sharded:
    """Per-GPU bytes after sharding, and what was moved to CPU RAM."""

    weights: float
    gradients: float
    optimizer: float
    cpu_offload: float = 0.0
    notes: tuple[str, ...] = ()


def _none(n: int, w: float, g: float, o: float) -> tuple[float, float, float]:
    return w, g, o


def _ddp(n: int, w: float, g: float, o: float) -> tuple[float, float, float]:
    return w, 2 * g, o  # gradient buckets hold a second copy


def _zero1(n: int, w: float, g: float, o: float) -> tuple[float, float, float]:
    return w, g, o / n


def _zero2(n: int, w: float, g: float, o: float) -> tuple[float, float, float]:
    return w, g / n, o / n


def _zero3(n: int, w: float, g: float, o: float) -> tuple[float, float, float]:
    return w / n, g / n, o / n


SHARDINGS: dict[str, Callable[[int, float, float, float], tuple[float, float, float]]] = {
    "none": _none,
    "ddp": _ddp,
    "zero1": _zero1,
    "zero2": _zero2,
    "zero3": _zero3,
    "fsdp": _zero3,
}


def shard(strategy: str, gpus: int, offload: bool, *, weights: float, gradients: float, optimizer: float) -> Sharded:
    """Per-GPU weights/gradients/optimizer under ``strategy`` over ``gpus`` GPUs (``offload``: state to CPU).

    Raises:
        ConfigError: unknown strategy, or several GPUs without a strategy.
    """
    if strategy not in SHARDINGS:
        raise ConfigError(f"--sharding: unknown '{strategy}'. Valid: {', '.join(SHARDINGS)}")
    if gpus < 1:
        raise ConfigError(f"--gpus: {gpus} must be at least 1")
    if strategy == "none" and gpus > 1:
        strategy = "ddp"
    w, g, o = SHARDINGS[strategy](gpus, weights, gradients, optimizer)
    notes = [] if gpus == 1 else [f"{strategy} over {gpus} GPUs (per-GPU numbers)"]
    cpu = 0.0
    if offload:
        cpu, o = o * gpus, 0.0
        if strategy in ("zero3", "fsdp"):
            cpu, w = cpu + w * gpus, 0.0
        notes.append("optimizer state offloaded to CPU RAM" + (" with the parameters" if not w else ""))
    return Sharded(w, g, o, cpu, tuple(notes))
