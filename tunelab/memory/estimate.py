"""The planner's typed result and the classic rule of thumb it is shown beside.

Units: bytes everywhere inside; GiB (2**30) in tables and ``--json``; the seed rule is quoted
in decimal GB (10**9) because that is how the rule of thumb is published ("16.8 GB for a 7B
model at 16 bits").
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

GIB = 2**30
GB = 10**9
SEED_RULE_OVERHEAD = 1.2


def seed_rule_bytes(params: float, bits: float) -> float:
    """The rule of thumb ``M = P · 4 B / (32 / Q) · 1.2``: weights at Q bits plus 20 %.

    ``--params 7e9 --bits 16`` gives 16.8e9 bytes (16.8 GB); it ignores activations, the KV cache,
    gradients and optimizer state, which is why the planner shows it only for comparison.
    """
    return params * 4 / (32 / bits) * SEED_RULE_OVERHEAD


#: Rows of the breakdown in display order, with what each one holds.
ROWS: dict[str, str] = {
    "weights": "model weights (frozen or trained), quantization constants included",
    "adapter": "trainable adapter weights (LoRA/DoRA/prompt/prefix/LLaMA-Adapter)",
    "models": "other models held at the same time (reference, reward, value, teacher)",
    "weight_copies": "16-bit copies of fp32 weights made by autocast and kept for backward",
    "gradients": "gradients of the trained parameters",
    "optimizer": "optimizer state (Adam moments, momentum)",
    "activations": "tensors saved for backward by the decoder blocks (or prefill activations)",
    "logits": "output logits and the loss (log-softmax and its gradient, fp32)",
    "kv_cache": "keys and values of every token (inference, PPO rollouts)",
    "overhead": "runtime overhead (CUDA context, cuBLAS workspace, allocator)",
    "overlap": "gradients appear while activations are freed: the peak is their max, not sum",
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one device, by component (bytes); ``total`` is their sum.

    Attributes:
        params: parameters of the main model. trainable: parameters that get gradients.
        seed_bits: Q of the seed rule (the bits of the weights).
        cpu_offload: bytes moved to CPU RAM (ZeRO/FSDP offload); not part of ``total``.
        details: one line per row saying how it was computed.
        notes: assumptions worth reading (precision, attention kernel, sharding).
    """

    weights: float = 0.0
    adapter: float = 0.0
    models: float = 0.0
    weight_copies: float = 0.0
    gradients: float = 0.0
    optimizer: float = 0.0
    activations: float = 0.0
    logits: float = 0.0
    kv_cache: float = 0.0
    overhead: float = 0.0
    overlap: float = 0.0
    params: int = 0
    trainable: int = 0
    seed_bits: float = 16
    cpu_offload: float = 0.0
    details: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def breakdown(self) -> dict[str, float]:
        """Rows in display order (bytes)."""
        return {name: getattr(self, name) for name in ROWS}

    @property
    def total(self) -> float:
        return sum(self.breakdown().values())

    @property
    def seed_rule(self) -> float:
        return seed_rule_bytes(self.params, self.seed_bits)

    def to_json(self) -> dict:
        """``{"total_gib", "breakdown": {row: GiB}, "seed_rule_gib"}`` plus a few context keys."""
        return {
            "total_gib": round(self.total / GIB, 4),
            "breakdown": {name: round(value / GIB, 4) for name, value in self.breakdown().items()},
            "seed_rule_gib": round(self.seed_rule / GIB, 4),
            "params": self.params,
            "trainable_params": self.trainable,
            "cpu_offload_gib": round(self.cpu_offload / GIB, 4),
        }

    def summary(self) -> str:
        """Plain-text table (for error messages, where rich markup is not wanted)."""
        lines = [f"  {name:<14}{value / GIB:>10.2f} GiB" for name, value in self.breakdown().items() if value]
        lines.append(f"  {'total':<14}{self.total / GIB:>10.2f} GiB")
        lines.append(f"  (seed rule P·4/(32/Q)·1.2 = {self.seed_rule / GB:.1f} GB)")
        return "\n".join(lines)


def field_names() -> list[str]:
    return [f.name for f in fields(MemoryEstimate)]
