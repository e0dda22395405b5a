"""``--fit DEVICE``: the cheapest change that makes a training plan fit.

Changes are tried in order of what they cost the user (a registry, cheapest first):
gradient checkpointing (~30 % more compute, same result), an 8-bit optimizer (same result
within noise, Dettmers et al. 2022), a smaller micro-batch with more accumulation (same
effective batch, slower), NF4 quantization of a LoRA base (QLoRA: slightly lower quality),
shorter sequences (changes the data) and more GPUs with ZeRO-3 (costs hardware). The first
single change that fits wins; otherwise changes are stacked in that order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from tunelab.memory.estimate import MemoryEstimate
from tunelab.memory.training import TrainSpec, plan_training

Change = Callable[[TrainSpec], Iterator[tuple[str, TrainSpec]]]


def _checkpointing(spec: TrainSpec) -> Iterator[tuple[str, TrainSpec]]:
    if not spec.gradient_checkpointing:
        yield "enable gradient checkpointing", replace(spec, gradient_checkpointing=True)


def _optimizer_8bit(spec: TrainSpec) -> Iterator[tuple[str, TrainSpec]]:
    if spec.optimizer in ("adamw", "paged_adamw"):
        yield "use the 8-bit AdamW optimizer (adamw_8bit)", replace(spec, optimizer="adamw_8bit")


def _micro_batch(spec: TrainSpec) -> Iterator[tuple[str, TrainSpec]]:
    batch, accum = spec.batch_size, spec.gradient_accumulation
    while batch > 1:
        batch, accum = batch // 2, accum * 2
        yield (
            f"micro-batch {batch} with gradient accumulation {accum} (same effective batch)",
            replace(spec, batch_size=batch, gradient_accumulation=accum),
        )


def _nf4(spec: TrainSpec) -> Iterator[tuple[str, TrainSpec]]:
    if spec.quantization == "none" and spec.adapter in ("lora", "dora"):
        yield "quantize the base to NF4 (QLoRA)", replace(spec, quantization="nf4", adapter="qlora")


def _shorter(spec: TrainSpec) -> Iterator[tuple[str, TrainSpec]]:
    seq = spec.seq_len
    while seq > 256:
        seq //= 2
        yield f"shorter sequences: max_length {seq}", replace(spec, seq_len=seq)


def _more_gpus(spec: TrainSpec) -> Iterator[tuple[str, TrainSpec]]:
    for n in (2, 4, 8, 16, 32, 64):
        if n > spec.gpus:
            yield f"{n} GPUs with ZeRO-3 / FSDP sharding", replace(spec, gpus=n, sharding="zero3")


CHANGES: list[Change] = [_checkpointing, _optimizer_8bit, _micro_batch, _nf4, _shorter, _more_gpus]


@dataclass(frozen=True)
class FitResult:
    """The changes chosen (empty when the plan already fits) and the plan after them."""

    changes: tuple[str, ...]
    spec: TrainSpec
    estimate: MemoryEstimate
    fits: bool


def find_fit(spec: TrainSpec, budget: float) -> FitResult:
    """Cheapest change (or stack of changes) that brings the plan under ``budget`` bytes."""
    plan = plan_training(spec)
    if plan.total <= budget:
        return FitResult((), spec, plan, True)
    for change in CHANGES:  # one change at a time, cheapest first
        for label, candidate in change(spec):
            est = plan_training(candidate)
            if est.total <= budget:
                return FitResult((label,), candidate, est, True)
    chosen: list[str] = []
    current = spec
    for change in CHANGES:  # stack them in order; a change that steps (batch, length) keeps its last step
        base_labels = list(chosen)
        for label, candidate in change(current):
            chosen = [*base_labels, label]
            current = candidate
            est = plan_training(current)
            if est.total <= budget:
                return FitResult(tuple(chosen), current, est, True)
    return FitResult(tuple(chosen), current, plan_training(current), False)
