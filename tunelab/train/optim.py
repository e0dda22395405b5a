"""Optimizers and learning-rate schedules, each chosen from an explicit registry.

AdamW (Loshchilov & Hutter, 2019) is fused where torch supports it; the 8-bit and paged
variants come from bitsandbytes (Dettmers et al., 2022, arXiv:2110.02861), which keeps the two
Adam moments in blockwise-quantized 8-bit form (paged: spilled to CPU under memory pressure).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tunelab.config import TrainArgs
from tunelab.errors import ConfigError
from tunelab.registry import Registry


def _param_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    # No decay on biases and norm gains (1-D tensors): decaying them only hurts.
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _adamw(groups, args: TrainArgs, device: str):
    fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=args.betas, fused=fused or None)


def _bnb(name: str) -> Callable:
    def build(groups, args: TrainArgs, device: str):
        if device != "cuda" and name.startswith("Paged"):
            raise ConfigError(
                f"training.optimizer={args.optimizer} pages optimizer state between GPU and CPU memory "
                "and needs a CUDA GPU.\n  fix: use adamw (or adamw_8bit) on CPU"
            )
        import bitsandbytes as bnb

        return getattr(bnb.optim, name)(groups, lr=args.learning_rate, betas=args.betas)

    return build


def _sgd(groups, args: TrainArgs, device: str):
    return torch.optim.SGD(groups, lr=args.learning_rate, momentum=0.9)


#: ``training.optimizer`` -> ``(param_groups, args, device) -> Optimizer``. Same names as the
#: config's Literal and the planner's :data:`tunelab.memory.optimizers.OPTIMIZERS` (tests/test_registry.py).
OPTIMIZERS: Registry[Callable] = Registry("optimizer", key="training.optimizer")
OPTIMIZERS.register("adamw", _adamw)
OPTIMIZERS.register("adamw_8bit", _bnb("AdamW8bit"))
OPTIMIZERS.register("paged_adamw", _bnb("PagedAdamW"))
OPTIMIZERS.register("paged_adamw_8bit", _bnb("PagedAdamW8bit"))
OPTIMIZERS.register("sgd", _sgd)


def build_optimizer(params: list[nn.Parameter], args: TrainArgs, device: str) -> torch.optim.Optimizer:
    if not params:
        raise ConfigError("nothing to train: the model has no parameter with requires_grad=True")
    return OPTIMIZERS[args.optimizer](_param_groups(params, args.weight_decay), args, device)


def _cosine(progress: float, floor: float) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _linear(progress: float, floor: float) -> float:
    return floor + (1 - floor) * (1 - progress)


def _constant(progress: float, floor: float) -> float:
    return 1.0


#: ``training.lr_scheduler`` -> ``(progress, floor) -> lr factor``.
SCHEDULES: Registry[Callable[[float, float], float]] = Registry("schedule", key="training.lr_scheduler")
SCHEDULES.register("cosine", _cosine)
SCHEDULES.register("linear", _linear)
SCHEDULES.register("constant", _constant)


def lr_factor(step: int, args: TrainArgs, time_used: float = 0.0) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based): linear warmup, then the schedule.

    ``time_used`` is the fraction of ``training.max_minutes`` spent so far: the schedule's progress
    is the larger of the step and the time fraction, so that a run stopped by its time budget has
    decayed its LR by then (a cosine cut off halfway would end at half the peak, not at the floor).
    """
    if args.warmup_steps and step < args.warmup_steps:
        return (step + 1) / args.warmup_steps
    span = max(1, args.max_steps - args.warmup_steps)
    progress = min(1.0, max((step - args.warmup_steps) / span, time_used))
    return SCHEDULES[args.lr_scheduler](progress, args.min_lr_ratio)


@dataclass
class TimeBudget:
    """``training.max_minutes``: the fraction of the budget spent, read once per step.

    The main process's clock decides on every rank (broadcast), so that all ranks stop at the same
    step and apply the same LR.
    """

    minutes: float | None
    start: float  # time.time() when the run started (setup and loading count against the budget)
    used: float = 0.0

    def spent(self, ranks: Any) -> bool:
        """Update :attr:`used`; True once the budget is spent (no further step may start)."""
        if self.minutes is None:
            return False
        from tunelab.train import distributed

        self.used = distributed.broadcast((time.time() - self.start) / (60.0 * self.minutes), ranks)
        return self.used >= 1.0

    def seconds_left(self) -> float | None:
        """Seconds until the budget is spent (None without one): what caps the progress line's ETA."""
        return None if self.minutes is None else self.start + 60.0 * self.minutes - time.time()


def build_scheduler(
    optimizer: torch.optim.Optimizer, args: TrainArgs, budget: TimeBudget | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """The LR schedule; with a ``budget`` its progress also follows the time spent (:func:`lr_factor`)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, args, budget.used if budget else 0.0)
    )
