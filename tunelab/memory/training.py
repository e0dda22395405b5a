"""Peak training memory of one device: weights, adapter, gradients, optimizer, activations, logits.

The peak of a training step is reached at the start of backward, when every saved activation
and the loss tensors are alive, or at its end, when the gradients are all written; with
``set_to_none`` gradients and no accumulation these two never coexist, so the planner adds
them and subtracts the smaller of the two (the ``overlap`` row) — except the output head's
gradient, which backward writes first, while every activation is still alive. Weights, optimizer state and
other models are resident throughout.

Precision modes (``precision``):

* ``fp32`` — fp32 weights, gradients, Adam moments (16 B/param with AdamW);
* ``mixed`` — fp32 master weights with bf16/fp16 autocast (what tunelab does on CPU): the same
  16 B/param plus a 16-bit copy of every linear weight that autocast makes and backward keeps;
* ``bf16`` — pure bf16 weights, gradients and moments (8 B/param; torchtune's default, and
  tunelab's on a bf16 GPU where the model loads in bf16).

Methods (``method``) change the rows per step and add models: DPO/ORPO/KTO/reward score
chosen and rejected together (twice the rows); DPO/KTO need a reference (a second model, the
adapter-off base for free, or precomputed log-probs); PPO holds policy, reference, reward model
and value head and generates rollouts with a KV cache; distillation holds a teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tunelab.errors import ConfigError
from tunelab.memory.activations import ActivationSetup, activation_bytes, logits_bytes
from tunelab.memory.arch import Architecture, count_parameters
from tunelab.memory.estimate import GIB, MemoryEstimate
from tunelab.memory.formats import kv_cache_bytes, weight_bytes
from tunelab.memory.optimizers import optimizer_bytes
from tunelab.memory.sharding import shard
from tunelab.memory.trainable import AdapterShape, Trainable, trainable

#: precision -> (param bytes, compute bytes, autocast)
PRECISIONS: dict[str, tuple[float, float, bool]] = {
    "fp32": (4, 4, False),
    "mixed": (4, 2, True),
    "bf16": (2, 2, False),
}

DEFAULT_OVERHEAD = 0.5 * GIB  # CUDA context + cuBLAS workspace; settable with --overhead-gib


@dataclass(frozen=True)
class TrainSpec:
    """Everything about a training run that decides its memory (see the module docstring)."""

    arch: Architecture
    adapter: str = "lora"
    method: str = "sft"
    batch_size: int = 1
    seq_len: int = 512
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    optimizer: str = "adamw"
    precision: str = "bf16"
    quantization: str = "none"  # none | nf4 | int8 (frozen base of LoRA-type adapters)
    double_quant: bool = True
    shape: AdapterShape = field(default_factory=AdapterShape)
    attention: str = "sdpa"
    masked: bool = True
    device: str = "cuda"
    reference: str = "adapter"  # model | adapter | precomputed | none
    reward_arch: Architecture | None = None
    teacher_arch: Architecture | None = None
    response_len: int = 256  # PPO: generated tokens per rollout
    gpus: int = 1
    sharding: str = "none"  # none | ddp | zero1 | zero2 | zero3 | fsdp
    offload: bool = False
    overhead: float = DEFAULT_OVERHEAD


@dataclass(frozen=True)
class MethodShape:
    """What a method adds: rows per example, models held, tokens of rollouts."""

    rows: int = 1  # forward rows per example (chosen + rejected = 2)
    frozen_models: float = 0.0  # bytes of other models
    kv_cache: float = 0.0
    vocab_logits: bool = True  # a scalar head (reward model) has no vocabulary term
    extra_logits: float = 0.0
    note: str = ""


def _frozen_model_bytes(arch: Architecture, spec: TrainSpec) -> float:
    """A frozen copy at the run's inference precision (quantized like the base when it is)."""
    fmt = {"nf4": "nf4-dq" if spec.double_quant else "nf4", "int8": "int8"}.get(spec.quantization)
    param_bytes = PRECISIONS[spec.precision][0]
    return weight_bytes(arch, fmt or ("fp32" if param_bytes == 4 else "bf16"), param_bytes)


def _reference_bytes(spec: TrainSpec) -> tuple[float, str]:
    if spec.reference == "model" or (spec.reference == "adapter" and spec.adapter in ("full", "freeze")):
        return _frozen_model_bytes(spec.arch, spec), "reference = a second frozen copy"
    if spec.reference in ("adapter", "precomputed", "none"):
        return 0.0, f"reference = {spec.reference} (no second copy)"
    raise ConfigError(f"--reference: unknown '{spec.reference}'. Valid: model, adapter, precomputed, none")


def _sft(spec: TrainSpec) -> MethodShape:
    return MethodShape()


def _pairwise(spec: TrainSpec) -> MethodShape:
    ref, note = _reference_bytes(spec)
    return MethodShape(rows=2, frozen_models=ref, note=f"chosen + rejected = 2 rows per pair; {note}")


def _orpo(spec: TrainSpec) -> MethodShape:
    return MethodShape(rows=2, note="chosen + rejected = 2 rows per pair; no reference")


def _kto(spec: TrainSpec) -> MethodShape:
    ref, note = _reference_bytes(spec)
    return MethodShape(rows=2, frozen_models=ref, note=f"each example + its mismatched KL example; {note}")


def _reward(spec: TrainSpec) -> MethodShape:
    return MethodShape(rows=2, vocab_logits=False, note="chosen + rejected; scalar score head (no vocabulary term)")


def _ppo(spec: TrainSpec) -> MethodShape:
    """Policy (trained) + reference + reward model (+ scalar head) + value head; rollouts keep a KV cache."""
    ref, note = _reference_bytes(spec)
    reward = _frozen_model_bytes(spec.reward_arch or spec.arch, spec)
    rollout = kv_cache_bytes(spec.arch, spec.seq_len + spec.response_len, spec.batch_size, "bf16")
    return MethodShape(
        frozen_models=ref + reward,
        kv_cache=rollout,
        note=f"{note}; reward model held; value head trained with the policy; rollout KV cache",
    )


def _distill(spec: TrainSpec) -> MethodShape:
    teacher = spec.teacher_arch or spec.arch
    tokens = spec.batch_size * spec.seq_len
    # teacher logits (16-bit) + its fp32 softmax for the KL term, alive with the student's loss
    teacher_logits = tokens * teacher.vocab_size * (PRECISIONS[spec.precision][1] + 4)
    return MethodShape(
        frozen_models=_frozen_model_bytes(teacher, spec),
        extra_logits=teacher_logits,
        note=f"teacher ({teacher.name or 'same architecture'}) held frozen; its logits are part of the loss",
    )


METHODS: dict[str, Callable[[TrainSpec], MethodShape]] = {
    "sft": _sft,
    "dpo": _pairwise,
    "ipo": _pairwise,
    "orpo": _orpo,
    "simpo": _orpo,
    "kto": _kto,
    "reward": _reward,
    "ppo": _ppo,
    "distill": _distill,
}


def _base_weight_bytes(spec: TrainSpec, t: Trainable) -> float:
    param_bytes = PRECISIONS[spec.precision][0]
    if spec.quantization != "none":
        if spec.adapter in ("full", "freeze"):
            raise ConfigError(f"adapter {spec.adapter} trains base weights, which cannot be quantized")
        return _frozen_model_bytes(spec.arch, spec)
    return count_parameters(spec.arch).total * param_bytes


def _weight_copies(spec: TrainSpec, t: Trainable) -> float:
    """Autocast casts each fp32 linear weight to 16 bits per forward; backward keeps the copies.

    Without checkpointing: every linear of the blocks that need gradients plus the output head.
    With checkpointing frozen copies are recomputed, but autocast's cache still holds trained ones.
    """
    param_bytes, c, autocast = PRECISIONS[spec.precision]
    a = spec.arch
    if not autocast:
        return 0.0
    if spec.quantization != "none":  # bitsandbytes layers dequantize themselves; only the head is cast
        return 0.0 if spec.gradient_checkpointing else c * a.vocab_size * a.hidden_size
    per_layer = sum(lin.weight_numel for lin in a.layer_linears())
    head = a.vocab_size * a.hidden_size
    if spec.gradient_checkpointing:
        trained = per_layer * t.grad_layers if t.base_trained else 0
        return c * (trained + (head if spec.adapter == "full" else 0))
    return c * (per_layer * t.grad_layers + head)


def _activation_setup(spec: TrainSpec, t: Trainable) -> ActivationSetup:
    param_bytes, c, autocast = PRECISIONS[spec.precision]
    return ActivationSetup(
        arch=spec.arch,
        trainable=t,
        compute_bytes=c,
        residual_bytes=param_bytes,
        autocast=autocast,
        attention=spec.attention,
        masked=spec.masked,
        lora_rank=spec.shape.r,
        lora_dropout=spec.shape.dropout > 0,
        device=spec.device,
    )


def plan_training(spec: TrainSpec) -> MemoryEstimate:
    """Peak memory of one device for ``spec`` (see the module docstring for the model of the peak).

    Raises:
        ConfigError: unknown method, adapter, optimizer, precision or sharding.
    """
    if spec.method not in METHODS:
        raise ConfigError(f"method: unknown '{spec.method}'. Valid: {', '.join(METHODS)}")
    if spec.precision not in PRECISIONS:
        raise ConfigError(f"--precision: unknown '{spec.precision}'. Valid: {', '.join(PRECISIONS)}")
    t = trainable(spec.arch, spec.adapter, spec.shape)
    m = METHODS[spec.method](spec)
    param_bytes, c, _ = PRECISIONS[spec.precision]
    trained_bytes = 4 if t.adapter else param_bytes  # peft keeps adapters in fp32
    counts = count_parameters(spec.arch)
    rows = spec.batch_size * m.rows
    setup = _activation_setup(spec, t)
    activations = activation_bytes(setup, rows, spec.seq_len, spec.gradient_checkpointing)
    tokens = rows * (spec.seq_len + t.extra_tokens)
    logits = (logits_bytes(spec.arch.vocab_size, tokens, c) if m.vocab_logits else 0.0) + m.extra_logits
    base = _base_weight_bytes(spec, t)
    adapter = t.numel * trained_bytes if t.adapter else 0.0
    gradients = t.numel * trained_bytes
    optimizer = optimizer_bytes(spec.optimizer, t.sizes, trained_bytes)
    copies = _weight_copies(spec, t)
    sharded = shard(spec.sharding, spec.gpus, spec.offload, weights=base, gradients=gradients, optimizer=optimizer)
    transient = activations + logits + copies
    # The output head's gradient is written first, while every activation is still alive.
    head_grad = spec.arch.vocab_size * spec.arch.hidden_size * trained_bytes if spec.adapter == "full" else 0.0
    freed_first = max(0.0, sharded.gradients - head_grad * sharded.gradients / max(gradients, 1.0))
    overlap = -min(transient, freed_first) if spec.gradient_accumulation == 1 else 0.0
    notes = [f"precision {spec.precision}: params {param_bytes:g} B, compute {c:g} B; adapters fp32"]
    if m.note:
        notes.append(m.note)
    notes += list(sharded.notes)
    return MemoryEstimate(
        weights=sharded.weights,
        adapter=adapter,
        models=m.frozen_models,
        weight_copies=copies,
        gradients=sharded.gradients,
        optimizer=sharded.optimizer,
        activations=activations,
        logits=logits,
        kv_cache=m.kv_cache,
        overhead=spec.overhead,
        overlap=overlap,
        params=counts.total,
        trainable=t.numel,
        seed_bits=_seed_bits(spec),
        cpu_offload=sharded.cpu_offload,
        details=_details(spec, t, rows, tokens),
        notes=tuple(notes),
    )


def _seed_bits(spec: TrainSpec) -> float:
    if spec.quantization == "nf4":
        return 4
    if spec.quantization == "int8":
        return 8
    return PRECISIONS[spec.precision][0] * 8


def _details(spec: TrainSpec, t: Trainable, rows: int, tokens: int) -> dict[str, str]:
    ckpt = "with" if spec.gradient_checkpointing else "without"
    return {
        "weights": f"{count_parameters(spec.arch).total:,} params, quantization {spec.quantization}",
        "adapter": f"{spec.adapter}: {t.numel:,} trainable params (fp32)" if t.adapter else "",
        "gradients": f"{t.numel:,} trained params",
        "optimizer": spec.optimizer,
        "activations": f"{rows} rows × {spec.seq_len} tokens, {t.grad_layers} blocks, {spec.attention}, "
        f"{ckpt} checkpointing",
        "logits": f"{tokens:,} tokens × vocab {spec.arch.vocab_size:,}",
    }


def with_changes(spec: TrainSpec, **changes) -> TrainSpec:
    """A copy of ``spec`` with fields changed (used by the ``--fit`` search)."""
    return replace(spec, **changes)
