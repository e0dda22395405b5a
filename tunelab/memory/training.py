"""Peak training memory of one device: weights, adapter, gradients, optimizer, activations, logits.

The peak of a training step is reached at the start of backward, when every saved activation
and the loss tensors are alive, or at its end, when the gradients are all written; with
``set_to_none`` gradients and no accumulation these two never coexist, so the planner adds
them and subtracts the smaller of the two (the ``overlap`` row) — except the output head's
gradient, which backward writes first, while every activation is still alive. With gradient
checkpointing the loss tensors are freed before the top block is recomputed, so of those two
the larger counts. Weights, optimizer state and other models are resident throughout.

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
from tunelab.memory.activations import (
    ActivationSetup,
    activation_bytes,
    checkpoint_bytes,
    head_bytes,
    logits_bytes,
    partial_checkpoint_bytes,
    quantized_input_bytes,
    recompute_bytes,
)
from tunelab.memory.arch import Architecture, count_parameters
from tunelab.memory.estimate import GIB, MemoryEstimate
from tunelab.memory.formats import kv_cache_bytes, nf4_bits_per_weight, weight_bytes
from tunelab.memory.optimizers import optimizer_bytes
from tunelab.memory.sharding import shard
from tunelab.memory.trainable import AdapterShape, Trainable, trainable
from tunelab.registry import Registry

#: precision -> (param bytes, compute bytes, autocast)
PRECISIONS: dict[str, tuple[float, float, bool]] = {
    "fp32": (4, 4, False),
    "mixed": (4, 2, True),
    "bf16": (2, 2, False),
}

DEFAULT_OVERHEAD = 0.5 * GIB  # CUDA context + cuBLAS workspace; settable with --overhead-gib


def planner_precision(weights: str, compute: str) -> str:
    """The planner's precision mode of a run whose weights are ``weights`` and whose matmuls run
    in ``compute`` (each fp32, bf16 or fp16): 16-bit weights are ``bf16``, fp32 weights with
    16-bit autocast ``mixed``, fp32 throughout ``fp32``."""
    if weights in ("bf16", "fp16"):
        return "bf16"
    return "fp32" if compute == "fp32" else "mixed"


#: Adapters peft refuses to combine with gradient checkpointing: ``training.checkpoint_fraction`` (a
#: memory default) is not applied to them; ``gradient_checkpointing: true`` still reaches peft's error.
UNCHECKPOINTABLE = frozenset({"prefix_tuning"})


def checkpoint_fraction(training, adapter: str | None = None) -> float:
    """The share of decoder layers the loop recomputes in backward (tunelab/train/activations.py)
    for a ``training`` config section and an adapter type."""
    if training.gradient_checkpointing:
        return 1.0
    return 0.0 if adapter in UNCHECKPOINTABLE else float(training.checkpoint_fraction)


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
    checkpoint_fraction: float = 0.0  # training.checkpoint_fraction: the first share of blocks checkpointed
    lean_activations: bool = False  # training.lean_activations: folded LoRA dropout, fused SwiGLU (tunelab/train)
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
    # How the training code spends memory around the model. The defaults are the plain
    # mechanisms; tunelab/memory/profiles.py sets them per toolkit (tunelab's own loop, plain
    # transformers + peft, torchtune, LitGPT) and `tunelab plan` exposes each as a flag.
    adapter_bytes: float = 4  # peft keeps adapters (and so their grads and moments) in fp32; bf16-true toolkits in 2
    loss: str = "full"  # "full" log-softmax over the vocabulary, "chunked" (16-bit logits only) or "recomputed"
    optimizer_in_backward: bool = False  # each tensor stepped in its gradient hook: one gradient alive at a time
    offload_activations: bool = False  # checkpointed block inputs (without checkpointing: all but one block) on CPU
    quantized_inputs_saved: bool = False  # bitsandbytes < 0.45: MatMul4Bit keeps the input of every 4-bit linear
    keeps_previous_graph: bool = False  # the loop holds last step's output until the next forward returns
    quantize_head: bool = False  # the output head is quantized too (Lightning Fabric's bitsandbytes plugin)
    dequant_copies: int = 1  # full-size copies per dequantized weight (Fabric: fp16 quant state + 16-bit cast = 2)
    kbit_upcast: bool = False  # peft's prepare_model_for_kbit_training: a quantized base's other params in fp32


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


#: method -> what it adds to the plan. The loop's methods (tunelab.methods.METHODS) under the
#: same names, and ``ipo`` as an alias of dpo (it is dpo's ``loss: ipo``; tests/test_registry.py).
METHODS: Registry[Callable[[TrainSpec], MethodShape]] = Registry("method", key="--method")
METHODS.register("sft", _sft)
METHODS.register("dpo", _pairwise, aliases=("ipo",))
METHODS.register("orpo", _orpo)
METHODS.register("simpo", _orpo)
METHODS.register("kto", _kto)
METHODS.register("reward", _reward)
METHODS.register("ppo", _ppo)
METHODS.register("distill", _distill)


def _base_weight_bytes(spec: TrainSpec, t: Trainable) -> float:
    param_bytes = PRECISIONS[spec.precision][0]
    if spec.quantization != "none":
        if spec.adapter in ("full", "freeze"):
            raise ConfigError(f"adapter {spec.adapter} trains base weights, which cannot be quantized")
        total = _frozen_model_bytes(spec.arch, spec)
        if spec.quantize_head and spec.quantization == "nf4":
            head = count_parameters(spec.arch).lm_head  # 0 when tied to the embeddings
            total += head * (nf4_bits_per_weight(spec.double_quant) / 8 - param_bytes)
        return total
    return count_parameters(spec.arch).total * param_bytes


def _dequant_bytes(spec: TrainSpec) -> float:
    """bitsandbytes dequantizes a 4/8-bit weight to full size for each matmul (forward and backward);
    the largest such weight (the head when it is quantized) sets the transient."""
    if spec.quantization == "none":
        return 0.0
    a = spec.arch
    largest = max(lin.weight_numel for lin in a.layer_linears())
    if spec.quantize_head and count_parameters(a).lm_head:
        largest = max(largest, a.vocab_size * a.hidden_size)
    return spec.dequant_copies * PRECISIONS[spec.precision][1] * largest


def _weight_copies(spec: TrainSpec, t: Trainable) -> float:
    """Autocast casts each fp32 linear weight to 16 bits per forward; backward keeps the copies.

    Without checkpointing: every linear of the blocks that need gradients plus the output head.
    With checkpointing the blocks' frozen copies are recomputed, but autocast's cache still holds
    trained ones, and the head (outside the checkpointed blocks) keeps its copy for backward.
    bitsandbytes layers dequantize themselves (:func:`_dequant_bytes`); only the head is cast.
    """
    param_bytes, c, autocast = PRECISIONS[spec.precision]
    a = spec.arch
    if not autocast:
        return 0.0
    head = c * a.vocab_size * a.hidden_size
    if spec.quantization != "none":
        return head
    per_layer = sum(lin.weight_numel for lin in a.layer_linears())
    if spec.gradient_checkpointing:
        return c * per_layer * t.grad_layers * t.base_trained + head
    return c * per_layer * t.grad_layers + head


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
        adapter_bytes=spec.adapter_bytes,
        device=spec.device,
        lean=spec.lean_activations,
    )


def plan_training(spec: TrainSpec) -> MemoryEstimate:
    """Peak memory of one device for ``spec`` (see the module docstring for the model of the peak).

    Raises:
        ConfigError: unknown method, adapter, optimizer, precision or sharding.
    """
    method_shape = METHODS.get(spec.method)  # unknown: lists the valid ones and the closest
    if spec.precision not in PRECISIONS:
        raise ConfigError(f"--precision: unknown '{spec.precision}'. Valid: {', '.join(PRECISIONS)}")
    spec = kbit_prepared(spec)
    t = trainable(spec.arch, spec.adapter, spec.shape)
    m = method_shape(spec)
    param_bytes, c, _ = PRECISIONS[spec.precision]
    trained_bytes = spec.adapter_bytes if t.adapter else param_bytes
    counts = count_parameters(spec.arch)
    rows = spec.batch_size * m.rows
    setup = _activation_setup(spec, t)
    if spec.checkpoint_fraction and not spec.gradient_checkpointing:
        activations = partial_checkpoint_bytes(setup, rows, spec.seq_len, spec.checkpoint_fraction)
    else:
        activations = activation_bytes(setup, rows, spec.seq_len, spec.gradient_checkpointing)
    tokens = rows * (spec.seq_len + t.extra_tokens)
    vocab_logits = (
        logits_bytes(spec.arch.vocab_size, tokens, c, spec.loss, spec.arch.hidden_size) if m.vocab_logits else 0.0
    )
    logits = vocab_logits + m.extra_logits
    offloaded = _offloaded_activations(spec, setup, rows, activations)
    activations -= offloaded
    kept_inputs = tokens * quantized_input_bytes(setup, spec.quantize_head) if _bnb_keeps_inputs(spec) else 0.0
    # The previous step's graph lives until the next forward returns: its ctx-held tensors
    # (not freed by backward) and its 16-bit logits.
    retained = kept_inputs + (tokens * spec.arch.vocab_size * c if m.vocab_logits else 0.0)
    activations += kept_inputs + (retained if spec.keeps_previous_graph else 0.0)
    base = _base_weight_bytes(spec, t)
    adapter = t.numel * trained_bytes if t.adapter else 0.0
    gradients = t.numel * trained_bytes
    if spec.optimizer_in_backward:  # stepped and freed in its hook: the largest tensor at a time
        gradients = max(t.sizes, default=0) * trained_bytes
    optimizer = optimizer_bytes(spec.optimizer, t.sizes, trained_bytes)
    copies = _weight_copies(spec, t) + _dequant_bytes(spec)
    sharded = shard(spec.sharding, spec.gpus, spec.offload, weights=base, gradients=gradients, optimizer=optimizer)
    # With checkpointing the loss backward frees the logits before the top block is recomputed:
    # the two are never alive together, the peak holds the larger.
    phases = -min(logits, recompute_bytes(setup, rows, spec.seq_len)) if spec.gradient_checkpointing else 0.0
    transient = activations + logits + copies + phases
    # The output head's gradient is written first, while every activation is still alive.
    head_grad = spec.arch.vocab_size * spec.arch.hidden_size * trained_bytes if spec.adapter == "full" else 0.0
    freed_first = max(0.0, sharded.gradients - head_grad * sharded.gradients / max(gradients, 1.0))
    overlap = phases - (min(transient, freed_first) if spec.gradient_accumulation == 1 else 0.0)
    adapters = "fp32" if spec.adapter_bytes == 4 else f"{spec.adapter_bytes:g} B"
    notes = [f"precision {spec.precision}: params {param_bytes:g} B, compute {c:g} B; adapters {adapters}"]
    if m.note:
        notes.append(m.note)
    notes += list(sharded.notes)
    notes += _recipe_notes(spec, offloaded, retained)
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
        cpu_offload=sharded.cpu_offload + offloaded,
        details=_details(spec, t, rows, tokens),
        notes=tuple(notes),
    )


def kbit_prepared(spec: TrainSpec) -> TrainSpec:
    """peft's ``prepare_model_for_kbit_training`` casts every parameter of a quantized model that is
    not 4/8-bit (embeddings, norms, the head) to fp32; with 16-bit compute that is ``mixed``."""
    if spec.kbit_upcast and spec.quantization != "none" and spec.precision == "bf16":
        return replace(spec, precision="mixed")
    return spec


def _bnb_keeps_inputs(spec: TrainSpec) -> bool:
    return spec.quantized_inputs_saved and spec.quantization == "nf4"


def _offloaded_activations(spec: TrainSpec, setup: ActivationSetup, rows: int, activations: float) -> float:
    """Saved activations moved to CPU RAM: the block inputs under checkpointing, else all but one block's."""
    if not spec.offload_activations:
        return 0.0
    if spec.gradient_checkpointing:
        return checkpoint_bytes(setup, rows, spec.seq_len)
    tokens = rows * (spec.seq_len + setup.trainable.extra_tokens)
    on_device = recompute_bytes(setup, rows, spec.seq_len) + tokens * head_bytes(setup)
    return max(0.0, activations - on_device)


def _recipe_notes(spec: TrainSpec, offloaded: float, retained: float) -> list[str]:
    notes = []
    if spec.loss == "chunked":
        notes.append("chunked loss: only the 16-bit logits are kept")
    if spec.loss == "recomputed":
        notes.append("recomputed loss: no logits kept, the head runs per chunk again in backward")
    if spec.optimizer_in_backward:
        notes.append("optimizer step in backward: one gradient alive at a time")
    if offloaded:
        notes.append(f"activation offloading: {offloaded / GIB:.2f} GiB of saved activations in CPU RAM")
    if _bnb_keeps_inputs(spec):
        notes.append("bitsandbytes < 0.45 keeps the input of every 4-bit linear")
    if spec.keeps_previous_graph:
        notes.append(f"the previous step's graph is alive at the end of forward ({retained / GIB:.2f} GiB)")
    if spec.quantize_head and spec.quantization != "none":
        notes.append("output head quantized and dequantized per call")
    if spec.kbit_upcast and spec.quantization != "none":
        notes.append("prepare_model_for_kbit_training: the non-quantized parameters are fp32")
    return notes


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
        "adapter": f"{spec.adapter}: {t.numel:,} trainable params ({spec.adapter_bytes:g} B each)" if t.adapter else "",
        "gradients": f"{t.numel:,} trained params",
        "optimizer": spec.optimizer,
        "activations": f"{rows} rows × {spec.seq_len} tokens, {t.grad_layers} blocks, {spec.attention}, "
        f"{ckpt} checkpointing",
        "logits": f"{tokens:,} tokens × vocab {spec.arch.vocab_size:,}",
    }


def with_changes(spec: TrainSpec, **changes) -> TrainSpec:
    """A copy of ``spec`` with fields changed (used by the ``--fit`` search)."""
    return replace(spec, **changes)
