"""What each fine-tuning method trains: the trainable tensors, counted from the architecture.

One function per adapter type (a registry). Each returns a :class:`Trainable`: the size of every
trainable tensor (the optimizer state of bitsandbytes' 8-bit optimizers depends on tensor
sizes), whether the base weights are trained, which linear layers carry LoRA, and how many
decoder blocks must keep activations for backward (blocks below the lowest trained parameter
need none).

Shapes follow peft 0.21 exactly: LoRA adds ``A (r × in)`` and ``B (out × r)`` per targeted linear
(Hu et al. 2021); DoRA adds a magnitude vector of ``out`` (Liu et al. 2024); prompt tuning an
embedding of ``P × h`` (Lester et al. 2021); prefix tuning an embedding of
``P × (L · 2 · kv_dim)`` (Li & Liang 2021; peft sizes it by the KV heads under GQA);
LLaMA-Adapter a ``1 × len × h`` prompt and a scalar gate per adapted layer (Zhang et al. 2023).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tunelab.errors import ConfigError
from tunelab.memory.arch import Architecture, count_parameters
from tunelab.registry import Registry


@dataclass(frozen=True)
class AdapterShape:
    """The adapter settings that change memory (defaults mirror :class:`tunelab.config.AdapterArgs`)."""

    r: int = 8
    target_modules: tuple[str, ...] | None = None  # None = peft's "all-linear" (every block linear)
    dropout: float = 0.05
    num_virtual_tokens: int = 16
    adapter_len: int = 10
    adapter_layers: int = 2
    freeze_train_layers: int = 2


@dataclass(frozen=True)
class Trainable:
    """The trainable part of a model under one method.

    Attributes:
        sizes: numel of every trainable tensor.
        base_trained: the base model's own weights are trained (full, freeze).
        lora_targets: names of linears carrying LoRA/DoRA (empty for other methods).
        dora: LoRA with a learned magnitude (DoRA).
        grad_layers: decoder blocks whose activations are kept for backward.
        extra_tokens: positions added in front of every row (prompt tuning).
        adapter_attention_len: LLaMA-Adapter prompt length attended to in adapted layers.
        adapter: the trainable tensors are an adapter beside a frozen base (fp32 in peft).
        first_input_grad: the lowest block's input needs a gradient (trained embeddings, soft prompt).
        prefix_tokens: trained key/value positions prepended in every layer (prefix tuning).
    """

    sizes: tuple[int, ...]
    base_trained: bool = False
    lora_targets: frozenset[str] = frozenset()
    dora: bool = False
    grad_layers: int = 0
    extra_tokens: int = 0
    adapter_attention_len: int = 0
    adapter: bool = True
    first_input_grad: bool = False
    prefix_tokens: int = 0

    @property
    def numel(self) -> int:
        return sum(self.sizes)


def _lora_targets(arch: Architecture, shape: AdapterShape) -> list:
    if shape.target_modules is None:  # peft's all-linear: every linear except the output head
        return [lin for lin in arch.layer_linears() if lin.name != "router"]
    known = {lin.name: lin for lin in arch.layer_linears()}
    unknown = [t for t in shape.target_modules or () if t not in known]
    if unknown:
        raise ConfigError(f"adapter.target_modules: {unknown} are not linears of this model; valid: {sorted(known)}")
    return [known[t] for t in shape.target_modules or ()]


def _lora(arch: Architecture, shape: AdapterShape, dora: bool = False) -> Trainable:
    """LoRA: per targeted linear (and per expert copy) ``r·in + out·r`` (+ ``out`` magnitude for DoRA)."""
    sizes: list[int] = []
    targets = _lora_targets(arch, shape)
    for _ in range(arch.num_hidden_layers):
        for lin in targets:
            for _copy in range(lin.copies):
                sizes += [shape.r * lin.in_features, lin.out_features * shape.r]
                if dora:
                    sizes.append(lin.out_features)
    return Trainable(
        tuple(sizes),
        lora_targets=frozenset(lin.name for lin in targets),
        dora=dora,
        grad_layers=arch.num_hidden_layers,
    )


def _dora(arch: Architecture, shape: AdapterShape) -> Trainable:
    return _lora(arch, shape, dora=True)


def _prompt_tuning(arch: Architecture, shape: AdapterShape) -> Trainable:
    """Soft prompt ``P × h``; every block keeps activations (the gradient flows from the input)."""
    return Trainable(
        (shape.num_virtual_tokens * arch.hidden_size,),
        grad_layers=arch.num_hidden_layers,
        extra_tokens=shape.num_virtual_tokens,
        first_input_grad=True,
    )


def _prefix_tuning(arch: Architecture, shape: AdapterShape) -> Trainable:
    """Prefix keys/values for every layer: ``P × L · 2 · kv_dim`` (no reparametrisation MLP)."""
    return Trainable(
        (shape.num_virtual_tokens * arch.num_hidden_layers * 2 * arch.kv_dim,),
        grad_layers=arch.num_hidden_layers,
        prefix_tokens=shape.num_virtual_tokens,
    )


def _llama_adapter(arch: Architecture, shape: AdapterShape) -> Trainable:
    """Per adapted (top) layer: prompt ``len × h`` and a zero-initialised scalar gate."""
    if shape.adapter_layers > arch.num_hidden_layers:
        raise ConfigError(f"adapter.adapter_layers: {shape.adapter_layers} > the model's {arch.num_hidden_layers}")
    sizes = (shape.adapter_len * arch.hidden_size, 1) * shape.adapter_layers
    return Trainable(sizes, grad_layers=shape.adapter_layers, adapter_attention_len=shape.adapter_len)


def _base_tensor_sizes(arch: Architecture) -> list[int]:
    """numel of each tensor of one block (weights, biases, norms) in module order."""
    sizes: list[int] = []
    for lin in arch.layer_linears():
        sizes.append(lin.weight_numel)
        if lin.bias:
            sizes.append(lin.out_features * lin.copies)
    sizes += [arch.hidden_size] * arch.rules.norms_per_layer
    if arch.rules.qk_norm:
        sizes += [arch.head_dim, arch.head_dim]
    return sizes


def _freeze(arch: Architecture, shape: AdapterShape) -> Trainable:
    """The last N blocks and the final norm are trained; nothing below them keeps activations."""
    if shape.freeze_train_layers > arch.num_hidden_layers:
        raise ConfigError(
            f"adapter.freeze_train_layers: {shape.freeze_train_layers} > the model's {arch.num_hidden_layers} layers"
        )
    sizes = _base_tensor_sizes(arch) * shape.freeze_train_layers + [arch.hidden_size]
    return Trainable(tuple(sizes), base_trained=True, grad_layers=shape.freeze_train_layers, adapter=False)


def _full(arch: Architecture, shape: AdapterShape) -> Trainable:
    counts = count_parameters(arch)
    sizes = [counts.embedding] + _base_tensor_sizes(arch) * arch.num_hidden_layers + [arch.hidden_size]
    if counts.lm_head:
        sizes.append(counts.lm_head)
    return Trainable(
        tuple(sizes), base_trained=True, grad_layers=arch.num_hidden_layers, adapter=False, first_input_grad=True
    )


#: adapter type -> its trainable tensors; same names as tunelab.models.adapters.ADAPTERS.
ADAPTERS: Registry[Callable[[Architecture, AdapterShape], Trainable]] = Registry("adapter type", key="--adapter")
ADAPTERS.register("lora", _lora)
ADAPTERS.register("qlora", _lora)
ADAPTERS.register("dora", _dora)
ADAPTERS.register("prompt_tuning", _prompt_tuning)
ADAPTERS.register("prefix_tuning", _prefix_tuning)
ADAPTERS.register("llama_adapter", _llama_adapter)
ADAPTERS.register("freeze", _freeze)
ADAPTERS.register("full", _full)


def trainable(arch: Architecture, adapter: str, shape: AdapterShape | None = None) -> Trainable:
    """The :class:`Trainable` of ``adapter`` on ``arch``.

    Raises:
        ConfigError: unknown adapter type (lists the valid ones) or a shape the model cannot take.
    """
    return ADAPTERS.get(adapter)(arch, shape or AdapterShape())
