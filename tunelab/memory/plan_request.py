"""Turn ``tunelab plan`` flags (and a run folder's config.yaml) into a plan.

Precedence: explicit flags, then the run's config.yaml when ``--model runs/NAME``, then the
defaults of :class:`tunelab.config.RunConfig`. ``--method`` accepts a training method
(``dpo``) or an adapter type (``qlora``), as people say both.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from tunelab.errors import ConfigError
from tunelab.memory.devices import find_device
from tunelab.memory.estimate import GB, GIB, MemoryEstimate, seed_rule_bytes
from tunelab.memory.fit import FitResult, find_fit
from tunelab.memory.formats import BITS_TO_FORMAT
from tunelab.memory.inference import InferSpec, plan_inference
from tunelab.memory.profiles import MECHANISM_FLAGS, Profile, find_profile, mechanism_fields
from tunelab.memory.sources import ModelSource, load_model_source
from tunelab.memory.trainable import ADAPTERS, AdapterShape
from tunelab.memory.training import (
    DEFAULT_OVERHEAD,
    METHODS,
    PRECISIONS,
    TrainSpec,
    kbit_prepared,
    plan_training,
    planner_precision,
)
from tunelab.methods.args import planner_reference


@dataclass(frozen=True)
class PlanFlags:
    """The flags of ``tunelab plan`` (None = not given)."""

    model: str
    method: str | None = None
    adapter: str | None = None
    inference: bool = False
    bits: int | None = None
    quant: str | None = None
    context: int = 4096
    kv_dtype: str = "bf16"
    batch_size: int | None = None
    seq_len: int | None = None
    grad_accum: int | None = None
    checkpointing: bool | None = None
    optimizer: str | None = None
    precision: str | None = None
    attn: str | None = None
    lora_r: int | None = None
    gpus: int = 1
    sharding: str = "none"
    offload: bool = False
    reference: str | None = None
    teacher: str | None = None
    reward_model: str | None = None
    device: str = "cuda"
    overhead_gib: float | None = None
    target_modules: str | None = None  # comma-separated linear names, or all-linear
    lora_dropout: float | None = None
    double_quant: bool | None = None
    # The training code's mechanisms (tunelab/memory/profiles.py); None = the profile's value.
    profile: str | None = None
    adapter_dtype: str | None = None
    chunked_loss: bool | None = None
    recomputed_loss: bool | None = None
    optimizer_in_backward: bool | None = None
    offload_activations: bool | None = None
    bnb_kept_inputs: bool | None = None
    keep_previous_graph: bool | None = None
    quantized_head: bool | None = None
    dequant_copies: int | None = None
    kbit_upcast: bool | None = None


FLAG_NAMES = frozenset(f.name for f in fields(PlanFlags))


def plan_flags(options: dict[str, Any]) -> PlanFlags:
    """``PlanFlags`` from the options of ``tunelab plan`` by name (the others, e.g. ``--json``, are not flags
    of the plan)."""
    return PlanFlags(**{name: value for name, value in options.items() if name in FLAG_NAMES})


@dataclass(frozen=True)
class PlanResult:
    """A plan, what it was made from, and the ``--fit`` outcome when asked."""

    estimate: MemoryEstimate
    title: str
    source: ModelSource
    spec: TrainSpec | InferSpec
    fit: FitResult | None = None
    fit_device: str | None = None
    profile: str | None = None  # training plans: the profile the flags were completed from

    def to_json(self) -> dict:
        """The estimate's JSON plus the profile and the mechanism settings it was planned with."""
        data = self.estimate.to_json()
        if isinstance(self.spec, TrainSpec):
            data["profile"] = self.profile
            planned = kbit_prepared(self.spec)  # the precision the plan used
            data["settings"] = {name: getattr(planned, name) for name in SPEC_SETTINGS}
        return data


#: TrainSpec fields reported by ``--json`` (what a profile or a mechanism flag decides).
SPEC_SETTINGS = ("precision", "gradient_checkpointing", "double_quant", "adapter_bytes", "loss",
                 "optimizer_in_backward", "offload_activations", "quantized_inputs_saved", "keeps_previous_graph",
                 "quantize_head", "dequant_copies", "kbit_upcast")


def seed_rule_only(params: float, bits: int) -> MemoryEstimate:
    """An estimate holding only the parameter count (its ``seed_rule`` is the rule of thumb)."""
    if bits not in BITS_TO_FORMAT:
        raise ConfigError(f"--bits: {bits} is not one of {sorted(BITS_TO_FORMAT)}")
    return MemoryEstimate(params=int(params), seed_bits=bits, overhead=0.0)


def seed_rule_line(params: float, bits: float) -> str:
    """``M = P · 4 B / (32 / Q) · 1.2`` in decimal GB, as the rule is published."""
    value = seed_rule_bytes(params, bits)
    return (
        f"seed rule M = P·4 B/(32/Q)·1.2 with P = {params:,.0f}, Q = {bits:g}: "
        f"{value / GB:.1f} GB (decimal GB, as the rule is quoted; {value / GIB:.2f} GiB)"
    )


def _split_method(value: str | None, adapter: str | None, run: dict[str, Any]) -> tuple[str, str]:
    method = run.get("method", "sft")
    adapter_type = (run.get("adapter") or {}).get("type", "lora")
    if value is not None:
        if value in ADAPTERS:
            adapter_type = value
        elif value in METHODS:
            method = value
        else:
            raise ConfigError(
                f"--method: unknown '{value}'. Methods: {', '.join(METHODS)}; adapters: {', '.join(ADAPTERS)}"
            )
    if adapter is not None:
        if adapter not in ADAPTERS:
            raise ConfigError(f"--adapter: unknown '{adapter}'. Valid: {', '.join(ADAPTERS)}")
        adapter_type = adapter
    return method, adapter_type


def _pick(flag: Any, section: dict[str, Any], key: str, default: Any) -> Any:
    return flag if flag is not None else section.get(key, default)


def with_profile(flags: PlanFlags, profile: Profile, quantized: bool) -> PlanFlags:
    """``flags`` with every flag not given taken from ``profile`` (flags given win)."""
    values = {key: value for key, value in profile.values(quantized).items() if getattr(flags, key) is None}
    return replace(flags, profile=profile.name, **values)


def _targets(flag: str | None, adapter_cfg: dict[str, Any]) -> tuple[str, ...] | None:
    """``--target-modules q_proj,v_proj`` (or the run's adapter.target_modules); None = all-linear."""
    targets = adapter_cfg.get("target_modules", "all-linear") if flag is None else flag
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
        if targets in ([], ["all-linear"]):
            return None
    return tuple(targets)


def _run_precision(source: ModelSource, device: str) -> str | None:
    """A run folder planned for the device it ran on: the precision its loop chose (precision.json;
    ``auto`` is measured per machine, so the device rule alone may not be what happened)."""
    chosen = source.run_precision or {}
    if chosen.get("dtype") not in ("fp32", "bf16", "fp16") or str(chosen.get("device", "")).split(":")[0] != device:
        return None
    weights = ((source.run_config or {}).get("model") or {}).get("dtype", "auto")
    if weights == "auto":  # tunelab.models.load.dtype_name for training
        weights = "bf16" if device != "cpu" and chosen["dtype"] == "bf16" else "fp32"
    return planner_precision(weights, chosen["dtype"])


def _train_spec(flags: PlanFlags, source: ModelSource) -> TrainSpec:
    run = source.run_config or {}
    model, adapter_cfg = run.get("model") or {}, run.get("adapter") or {}
    data, training = run.get("data") or {}, run.get("training") or {}
    method, adapter = _split_method(flags.method, flags.adapter, run)
    quantization = "nf4" if adapter == "qlora" else model.get("quantization", "none")
    flags = with_profile(flags, find_profile(flags.profile), quantization != "none")
    device_rule = "bf16" if flags.device == "cuda" else "mixed"
    precision = flags.precision or _run_precision(source, flags.device) or device_rule
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision: unknown '{precision}'. Valid: {', '.join(PRECISIONS)}")
    return TrainSpec(
        arch=source.arch,
        adapter=adapter,
        method=method,
        batch_size=_pick(flags.batch_size, training, "micro_batch_size", 4),
        seq_len=_pick(flags.seq_len, data, "max_length", 512),
        gradient_accumulation=_pick(flags.grad_accum, training, "gradient_accumulation", 1),
        gradient_checkpointing=_pick(flags.checkpointing, training, "gradient_checkpointing", False),
        optimizer=_pick(flags.optimizer, training, "optimizer", "adamw"),
        precision=precision,
        quantization=quantization,
        double_quant=_pick(flags.double_quant, model, "double_quant", True),
        shape=AdapterShape(
            r=_pick(flags.lora_r, adapter_cfg, "r", 8),
            target_modules=_targets(flags.target_modules, adapter_cfg),
            dropout=_pick(flags.lora_dropout, adapter_cfg, "dropout", 0.05),
            num_virtual_tokens=adapter_cfg.get("num_virtual_tokens", 16),
            adapter_len=adapter_cfg.get("adapter_len", 10),
            adapter_layers=adapter_cfg.get("adapter_layers", 2),
            freeze_train_layers=adapter_cfg.get("freeze_train_layers", 2),
        ),
        attention=_pick(flags.attn, model, "attn_implementation", "sdpa"),
        device=flags.device,
        reference=flags.reference or planner_reference(method, run.get("method_args") or {}),
        teacher_arch=load_model_source(flags.teacher).arch if flags.teacher else None,
        reward_arch=load_model_source(flags.reward_model).arch if flags.reward_model else None,
        gpus=flags.gpus,
        sharding=flags.sharding,
        offload=flags.offload,
        overhead=DEFAULT_OVERHEAD if flags.overhead_gib is None else flags.overhead_gib * GIB,
        **mechanism_fields({name: getattr(flags, name) for name in MECHANISM_FLAGS}),
    )


def _infer_spec(flags: PlanFlags, source: ModelSource) -> InferSpec:
    if flags.bits is not None and flags.bits not in BITS_TO_FORMAT:
        raise ConfigError(f"--bits: {flags.bits} is not one of {sorted(BITS_TO_FORMAT)}")
    fmt = flags.quant or BITS_TO_FORMAT[flags.bits or 16]
    return InferSpec(
        arch=source.arch,
        weight_format=fmt,
        context=flags.context,
        batch_size=flags.batch_size or 1,
        kv_dtype=flags.kv_dtype,
        attention=flags.attn or "sdpa",
        overhead=DEFAULT_OVERHEAD if flags.overhead_gib is None else flags.overhead_gib * GIB,
    )


def make_plan(flags: PlanFlags, fit_device: str | None = None) -> PlanResult:
    """Plan what ``flags`` describe; with ``fit_device`` also search the cheapest change that fits it."""
    source = load_model_source(flags.model)
    if flags.inference:
        find_profile(flags.profile)  # a misspelt --profile is an error here too, though serving has no profile
        spec = _infer_spec(flags, source)
        title = f"inference: {flags.model}, {spec.weight_format}, context {spec.context} × batch {spec.batch_size}"
        result = PlanResult(plan_inference(spec), title, source, spec)
        if fit_device:
            raise ConfigError("--fit searches training changes; for inference lower --bits, --context or --batch-size")
        return result
    spec = _train_spec(flags, source)
    profile = find_profile(flags.profile).name
    title = (
        f"training: {flags.model}, {spec.method} + {spec.adapter}, micro-batch {spec.batch_size} × "
        f"{spec.seq_len} tokens, {kbit_prepared(spec).precision}, profile {profile}"
    )
    estimate = plan_training(spec)
    fit = None
    if fit_device:
        device = find_device(fit_device)
        fit = find_fit(spec, device.memory)
        fit_device = device.label
    return PlanResult(estimate, title, source, spec, fit, fit_device, profile)
