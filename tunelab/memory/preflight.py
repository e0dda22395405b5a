"""Pre-flight check of ``tunelab train``: plan the run from its config before loading anything heavy.

The training loop calls :func:`check_fits` first; a run whose plan exceeds the free memory is
refused with the plan and the cheapest change that would make it fit (``--force`` overrides).
"""

from __future__ import annotations

from tunelab.config import RunConfig
from tunelab.errors import ConfigError
from tunelab.memory.devices import meminfo
from tunelab.memory.estimate import GIB, MemoryEstimate
from tunelab.memory.fit import find_fit
from tunelab.memory.profiles import DEFAULT_PROFILE, find_profile, mechanism_fields
from tunelab.memory.sources import load_model_source
from tunelab.memory.trainable import AdapterShape
from tunelab.memory.training import TrainSpec, checkpoint_fraction, plan_training, planner_precision
from tunelab.methods.args import planner_reference


def _precision(config: RunConfig, device: str) -> str:
    """How the loop will hold weights and compute, decided as the loop decides it.

    ``auto`` is the precision probe's choice on this machine (tunelab.models.precision,
    measured once and cached): on a CPU where bf16 matmuls are slower the loop trains in fp32,
    and planning bf16 autocast there would plan a run that does not happen. Weights follow
    ``tunelab.models.load.dtype_name``: bf16 on a GPU where the probe chose bf16, else fp32.
    """
    from tunelab.models.load import dtype_name
    from tunelab.models.precision import choose_precision

    weights = dtype_name(config.model.dtype, device, for_training=True)
    compute = config.training.precision
    if compute == "auto":
        compute = choose_precision("auto", device).dtype
    return planner_precision(weights, compute)


def _teacher_arch(config: RunConfig):
    """The distillation teacher's architecture (``method_args.teacher``), held frozen beside the student."""
    if config.method != "distill":
        return None
    return load_model_source(config.method_args["teacher"]).arch


def spec_from_config(config: RunConfig, device: str = "cpu") -> TrainSpec:
    """The :class:`TrainSpec` of a run config on ``device`` (``cpu`` or ``cuda``)."""
    a, t = config.adapter, config.training
    targets = None if a.target_modules == "all-linear" else tuple(a.target_modules)
    return TrainSpec(
        arch=load_model_source(config.model.name).arch,
        adapter=a.type,
        method=config.method,  # every loop method is a planner method (tests/test_registry.py)
        batch_size=t.micro_batch_size,
        seq_len=config.data.max_length,
        gradient_accumulation=t.gradient_accumulation,
        gradient_checkpointing=checkpoint_fraction(t, a.type) >= 1,  # the loop's rule (prefix tuning: never)
        checkpoint_fraction=checkpoint_fraction(t, a.type),
        lean_activations=t.lean_activations,
        optimizer=t.optimizer,
        precision=_precision(config, device),
        quantization=config.model.quantization,
        double_quant=config.model.double_quant,
        shape=AdapterShape(
            r=a.r,
            target_modules=targets,
            dropout=a.dropout,
            num_virtual_tokens=a.num_virtual_tokens,
            adapter_len=a.adapter_len,
            adapter_layers=a.adapter_layers,
            freeze_train_layers=a.freeze_train_layers,
        ),
        attention=config.model.attn_implementation,
        device="cuda" if device == "cuda" else "cpu",
        # what the method's typed args say the reference costs: none for reference-free losses
        reference=planner_reference(config.method, config.method_args),
        teacher_arch=_teacher_arch(config),
        # tunelab's own loop: its profile's mechanisms (e.g. peft's fp32 upcast of a quantized base)
        **mechanism_fields(find_profile(DEFAULT_PROFILE).values(config.model.quantization != "none")),
    )


def check_fits(
    config: RunConfig, *, free_bytes: int | None = None, device_name: str | None = None, force: bool = False
) -> MemoryEstimate:
    """Plan ``config`` and refuse it if it cannot fit ``free_bytes`` (CPU: MemAvailable).

    Returns:
        The plan (also when it fits or ``force`` is set).

    Raises:
        ConfigError: the plan exceeds the free memory and ``force`` is False; the message holds
            the plan and the suggested change.
    """
    device = "cuda" if device_name and device_name.startswith("cuda") else "cpu"
    spec = spec_from_config(config, device)
    plan = plan_training(spec)
    if free_bytes is None and device == "cpu":
        available = meminfo("MemAvailable")
        free_bytes = int(available) if available is not None else None
    if free_bytes is None or force or plan.total <= free_bytes:
        return plan
    fit = find_fit(spec, free_bytes)
    advice = (
        "  suggested change: " + "; ".join(fit.changes) + f" (plan after it: {fit.estimate.total / GIB:.2f} GiB)"
        if fit.fits
        else "  no single setting change makes it fit; use a smaller model or more memory"
    )
    raise ConfigError(
        f"the memory planner estimates {plan.total / GIB:.2f} GiB for this run, but only "
        f"{free_bytes / GIB:.2f} GiB is free on {device_name or device}:\n{plan.summary()}\n{advice}\n"
        "  run `tunelab plan` with the same settings for details, or pass --force to train anyway"
    )
