"""The one training loop, shared by every method (SFT, reward, DPO, ORPO, KTO, PPO, ...).

It owns what methods must not repeat: run folders, seeding, device placement and mixed
precision (accelerate), the optimizer and schedule, exact gradient accumulation, clipping,
non-finite step handling, evaluation, atomic checkpoints and resume, metrics, plots, trackers
and the progress bar. A method (``tunelab.methods.base.Method``) only turns items into batches
and batches into a loss.

Gradient accumulation is exact: every micro-batch loss is a mean over its own weight (tokens
or pairs), so it is rescaled by ``weight / step_total`` before ``backward``; micro-batch 1 x
accumulation 4 then equals micro-batch 4 x accumulation 1 up to float rounding.

The loop is rank-aware (:mod:`tunelab.train.distributed`): under ``--nproc N`` / ``accelerate
launch`` every process runs it on its shard of the shared sample order, the step total is the
global one, gradients are synchronised on the last micro-batch only, metrics are reduced over
ranks, and only the main process writes the run folder; N processes equal one process with the
same global batch (tests/train/test_ddp.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import statistics
import time
import warnings
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from tunelab.config import RunConfig, save_config
from tunelab.errors import CheckpointError, ConfigError, TrainingError
from tunelab.methods import get_method
from tunelab.methods.base import Batch, Datasets, Method
from tunelab.models.precision import choose_precision, mark_stale
from tunelab.train import activations, distributed
from tunelab.train.checkpoint import (
    TrainState,
    complete_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tunelab.train.distributed import Ranks
from tunelab.train.flops import FlopsModel, mfu
from tunelab.train.metrics import MetricsLog, plot_curves, tracker_config
from tunelab.train.optim import TimeBudget, build_optimizer, build_scheduler
from tunelab.train.progress import StepProgress
from tunelab.train.sampler import LengthGroupedSampler, ResumableSampler
from tunelab.utils.log import console


@dataclass
class RunResult:
    """What a finished run reports (also saved as ``<run>/result.json``)."""

    run_dir: str
    method: str
    steps: int
    final_loss: float | None
    val: dict[str, float]
    tokens_per_s: float
    wall_s: float
    skipped_steps: int
    output: str
    extra: dict[str, Any] = field(default_factory=dict)
    #: fp16 steps the grad scaler skipped on overflow (not counted in ``skipped_steps``).
    overflow_steps: int = 0
    #: The trained model in memory (not saved in result.json); lets callers evaluate without reloading.
    model: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


def refuse_started_run(run_dir: Path, resume: bool) -> None:
    """A run folder that already holds a run is continued with ``--resume``, never overwritten."""
    started = run_dir.exists() and (complete_checkpoints(run_dir / "checkpoints") or (run_dir / "result.json").exists())
    if started and not resume:
        raise CheckpointError(
            f"run folder {run_dir} already holds a run.\n"
            f"  fix: continue it with --resume, or start a new one with name=<new-name>"
        )


def _run_dir(config: RunConfig, resume: bool, ranks: Ranks) -> Path:
    if config.name is None:  # the main process's stamp, so every rank names the same folder
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        config.name = distributed.broadcast(f"{config.method}-{config.adapter.type}-{stamp}", ranks)
    run_dir = config.run_dir()
    refuse_started_run(run_dir, resume)
    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier(ranks)  # every rank has checked the folder before the main one writes to it
    return run_dir


def _precision(config: RunConfig, device: str) -> str:
    """accelerate mixed-precision mode; ``auto`` is what the precision probe measured fastest here."""
    from tunelab.models.precision import choose_precision

    choice = choose_precision(config.training.precision, device)
    if device == "cpu" and choice.dtype == "fp16":
        # accelerate turns fp16 off on CPU without a word (no autocast, no scaler) while the
        # reference/PPO passes would autocast to fp16: refuse rather than train in a mix.
        raise ConfigError(
            "training.precision: fp16 is not supported for training on CPU (accelerate would "
            "silently train in fp32).\n  fix: training.precision=auto (measured), fp32 or bf16"
        )
    return choice.mixed_precision


def _accelerator(config: RunConfig, device: str, run_dir: Path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # Several runs in one process (tests, pipelines) may use different precisions.
    AcceleratorState._reset_state(reset_partial_state=True)
    trackers = list(config.training.trackers)
    if "wandb" in trackers:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("training.trackers: wandb is not installed.\n  fix: pip install wandb, or drop it")
    return Accelerator(
        cpu=device == "cpu",
        mixed_precision=_precision(config, device),
        log_with=trackers or None,
        project_dir=str(run_dir / "trackers"),
    )


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _grad_norm(accelerator, params: list[torch.nn.Parameter], max_norm: float | None) -> float:
    """Global norm of the true gradients, clipped to ``max_norm`` when it is set.

    Under fp16 the gradients hold ``loss scale x`` their value until the grad scaler unscales
    them; accelerate's ``clip_grad_norm_`` / ``unscale_gradients`` do that once per step (and let
    the scaler record an overflow), so both the clip and the logged norm see the real values.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm is not None:
        return float(accelerator.clip_grad_norm_(params, max_norm))
    accelerator.unscale_gradients()
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


@dataclass
class StepOutcome:
    loss: float
    metrics: dict[str, float]
    tokens: int
    finite: bool
    #: non-padding length of every trained example, and of those that also ran a frozen forward (FLOPs)
    lengths: list[int] = field(default_factory=list)
    frozen_lengths: list[int] = field(default_factory=list)


def _micro_batches(method: Method, model, step: int, sampler: ResumableSampler, train_items, config) -> list[Batch]:
    online = method.next_micro_batches(model, step, sampler)
    if online is not None:
        return online
    mbs = config.training.micro_batch_size
    return [
        method.collate([train_items[i] for i in sampler.take(mbs)])
        for _ in range(config.training.gradient_accumulation)
    ]


def _forward_backward(method: Method, model, batches: list[Batch], accelerator, ranks: Ranks) -> StepOutcome:
    """Accumulate gradients of one optimizer step; losses weighted exactly by batch weights.

    With several processes the step total is the global one and gradients are synchronised on
    the last micro-batch only (``accelerator.no_sync`` before); a rank whose loss is not finite
    still runs every backward (times 0), so that the ranks' collectives stay matched.
    """
    weights = [float(method.batch_weight(b)) for b in batches]
    total_w = distributed.all_sum(sum(weights), ranks, accelerator.device) or 1.0
    finite = True
    loss_sum, tokens, merged = 0.0, 0, {}
    lengths: list[int] = []
    frozen: list[int] = []
    for i, (batch, w) in enumerate(zip(batches, weights, strict=True)):
        batch = _to_device(batch, accelerator.device)
        sync = contextlib.nullcontext() if i == len(batches) - 1 else accelerator.no_sync(model)
        with sync:
            with accelerator.autocast():
                loss, metrics = method.loss(model, batch)
            if not torch.isfinite(loss.detach()):
                if ranks.world == 1:
                    return StepOutcome(float(loss.detach()), metrics, tokens, finite=False)
                finite = False
            accelerator.backward(loss * (distributed.loss_scale(w, total_w, ranks) if finite else 0.0))
        loss_sum += float(loss.detach()) * w
        lengths += method.example_lengths(batch)
        frozen += method.frozen_forward_lengths(batch)
        tokens = sum(lengths)
        for k, v in metrics.items():
            merged[k] = merged.get(k, 0.0) + float(v) * w / total_w
    loss_sum, tokens, finite, merged = distributed.reduce_outcome(loss_sum, tokens, finite, merged, ranks)
    return StepOutcome(loss_sum / total_w, merged, tokens, finite=finite, lengths=lengths, frozen_lengths=frozen)


def _evaluate(method: Method, model, items, config: RunConfig, accelerator) -> dict[str, float]:
    if not items:
        return {}
    mbs = config.training.micro_batch_size
    batches = [method.collate(list(items[i : i + mbs])) for i in range(0, len(items), mbs)]
    if config.training.eval_batches:
        batches = batches[: config.training.eval_batches]
    was_training = model.training
    model.eval()
    with torch.no_grad(), accelerator.autocast():
        result = method.evaluate(model, [_to_device(b, accelerator.device) for b in batches])
    model.train(was_training)
    return result


def _setup(config: RunConfig, resume: bool, force: bool):
    """Run folder, pre-flight, seeds, accelerator, model + adapter, method and data."""
    from tunelab.models.load import default_device, load_model

    device = default_device(config.training.device)
    ranks = distributed.start(device)
    run_dir = _run_dir(config, resume, ranks)
    _preflight(config, device, force)
    torch.manual_seed(config.training.seed)
    random.seed(config.training.seed)
    accelerator = _accelerator(config, device, run_dir)
    from tunelab.models.precision import choose_precision, report_precision  # printed and saved as precision.json

    if ranks.main:
        report_precision(choose_precision(config.training.precision, device), run_dir)
    method_cls = get_method(config.method)
    distributed.require_support(config.method, method_cls.multi_process, ranks)
    model, tokenizer = load_model(
        config.model,
        config.adapter,
        for_training=True,
        device=device,
        gradient_checkpointing=activations.checkpoint_fraction(config.training, config.adapter.type) > 0,
    )
    levers = activations.apply(model, config.training, config.adapter.type)  # dropout masks, SwiGLU, checkpointing
    method = method_cls(config, model, tokenizer, distributed.scratch_dir(ranks, run_dir))
    datasets = method.build_datasets()
    if len(datasets.train) == 0:
        raise TrainingError("no training items left after data preparation; see data_report.json")
    if ranks.main:
        save_config(config, run_dir / "config.yaml")
        (run_dir / "memory.json").write_text(json.dumps(activations.record(levers), indent=2))
        (run_dir / "data_report.json").write_text(json.dumps(datasets.report, indent=2, default=str))
    return run_dir, accelerator, model, tokenizer, method, datasets, ranks


def _preflight(config: RunConfig, device: str, force: bool) -> None:
    """Refuse a run that cannot fit before anything heavy is loaded (the memory planner)."""
    from tunelab.memory.preflight import check_fits

    free = None
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
    check_fits(config, free_bytes=free, device_name=device, force=force)


def _sampler(method: Method, items, args, ranks: Ranks) -> ResumableSampler:
    """The seeded data order; length-grouped batches with ``training.group_by_length``."""
    if args.group_by_length:
        lengths = [method.item_length(item) for item in items]
        return LengthGroupedSampler(lengths, args.seed, args.micro_batch_size, rank=ranks.rank, world=ranks.world)
    return ResumableSampler(len(items), args.seed, rank=ranks.rank, world=ranks.world)


def train(config: RunConfig, *, resume: bool = False, force: bool = False) -> RunResult:
    """Train ``config`` to the end (or resume it) and save the adapter/model in the run folder.

    Raises:
        CheckpointError: the run folder already holds a run and ``resume`` is False.
        TrainingError: too many non-finite steps in a row (the last good checkpoint is kept).
    """
    start_time = time.time()
    run_dir, accelerator, model, tokenizer, method, datasets, ranks = _setup(config, resume, force)
    args = config.training
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, args, accelerator.device.type)
    budget = TimeBudget(args.max_minutes, start_time)
    scheduler = build_scheduler(optimizer, args, budget)
    distributed.configure_engine(accelerator, args.micro_batch_size, args.gradient_accumulation)
    model, optimizer = accelerator.prepare(model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]  # FSDP2 swaps in sharded (DTensor) parameters
    sampler = _sampler(method, datasets.train, args, ranks)
    state = TrainState(
        step=0, optimizer={}, scheduler={}, sampler={}, method={}, bad_in_a_row=0, bad_total=0, tokens_seen=0, rng={}
    )
    checkpoints = complete_checkpoints(run_dir / "checkpoints")
    if resume and checkpoints:
        state = load_checkpoint(checkpoints[-1], accelerator.unwrap_model(model))
        _load_optimizer(optimizer, state.optimizer, ranks)
        scheduler.load_state_dict(state.scheduler)
        sampler.load_state_dict(state.sampler)
        method.load_state_dict(state.method)
        if state.scaler and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(state.scaler)
        set_rng_state(state.rng)
        if ranks.main:
            console.print(f"[cyan]resuming[/cyan] {run_dir} from step {state.step}")
    elif resume and ranks.main:
        console.print(f"[yellow]no complete checkpoint in {run_dir}; starting from step 0[/yellow]")
    metrics = MetricsLog(run_dir / "metrics.jsonl", resume_step=state.step if resume else None, write=ranks.main)
    ctx = RunContext(
        config=config,
        run_dir=run_dir,
        accelerator=accelerator,
        model=model,
        tokenizer=tokenizer,
        method=method,
        datasets=datasets,
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler,
        state=state,
        metrics=metrics,
        params=params,
        start_time=start_time,
        budget=budget,
        ranks=ranks,
        flops=FlopsModel.of(accelerator.unwrap_model(model)),
        peak_gflops=(choice := choose_precision(args.precision, accelerator.device.type)).peak_gflops,
        probe_cache=choice.cache,
    )
    method.before_training(accelerator.unwrap_model(model), datasets)
    if args.eval_every and state.step == 0:  # the baseline every later evaluation is compared to
        metrics.write({"step": 0, **_evaluate(method, model, datasets.validation, config, accelerator)})
    if args.trackers:
        accelerator.init_trackers("tunelab", config=tracker_config(config.model_dump(mode="json")))
    return _finish(ctx, _run_steps(ctx))


@dataclass
class RunContext:
    """What a run's steps, checkpoints and finish share; built once by :func:`train`."""

    config: RunConfig
    run_dir: Path
    accelerator: Any
    model: Any  # as prepared by accelerate
    tokenizer: Any
    method: Method
    datasets: Datasets
    optimizer: Any  # accelerate's wrapper: its step() runs the fp16 grad scaler
    scheduler: Any
    sampler: ResumableSampler
    state: TrainState
    metrics: MetricsLog
    params: list[torch.nn.Parameter]
    start_time: float
    budget: TimeBudget  #: training.max_minutes
    ranks: Ranks = field(default_factory=Ranks)  #: this process among the training processes
    flops: FlopsModel | None = None  #: the model's FLOP count per step (MFU)
    peak_gflops: float = 0.0  #: measured peak of the run's dtype (the precision probe)
    probe_cache: str | None = None  #: the probe's cache file (named when its peak is found wrong)


def _run_steps(ctx: RunContext) -> float | None:
    """Optimizer steps from ``state.step`` to ``max_steps``; returns the last taken step's loss.

    Every loop step, taken or skipped, advances ``state.step`` and the LR schedule together, so
    a skipped step never shifts the schedule. A non-finite loss (or, without a grad scaler, a
    non-finite gradient norm) is a bad step that counts towards ``max_bad_steps``. Under fp16
    an overflowing gradient is the grad scaler's business: accelerate's ``optimizer.step()``
    skips the update and lowers the scale, as it does on the first steps of every fp16 run.
    """
    args, state, scaler = ctx.config.training, ctx.state, ctx.accelerator.scaler
    last_loss: float | None = None
    step_time = time.time()
    quiet = None if ctx.ranks.main else Console(quiet=True)  # one progress display: the main process's
    with StepProgress(args.max_steps, state.step, console=quiet, deadline_s=ctx.budget.seconds_left()) as progress:
        for step in range(state.step, args.max_steps):
            if ctx.budget.spent(ctx.ranks):
                if ctx.ranks.main:
                    console.print(f"time budget of {args.max_minutes:g} min spent: stopped after {step} steps")
                break
            ctx.model.train()
            batches = _micro_batches(ctx.method, ctx.model, step, ctx.sampler, ctx.datasets.train, ctx.config)
            outcome = _forward_backward(ctx.method, ctx.model, batches, ctx.accelerator, ctx.ranks)
            norm = _grad_norm(ctx.accelerator, ctx.params, args.max_grad_norm) if outcome.finite else float("nan")
            state.step = step + 1
            lr = ctx.scheduler.get_last_lr()[0]
            overflow = _optimizer_step(ctx, outcome.finite and (math.isfinite(norm) or scaler is not None))
            if not (outcome.finite and math.isfinite(norm)):
                _skipped_step(ctx, outcome, norm, overflow)
                continue
            state.bad_in_a_row = 0
            state.tokens_seen += outcome.tokens
            last_loss = outcome.loss
            now = time.time()
            tok_s = outcome.tokens / max(now - step_time, 1e-9)
            step_flops = ctx.flops.step_flops(outcome.lengths, outcome.frozen_lengths) if ctx.flops else 0.0
            step_mfu = _checked_mfu(ctx, step_flops, now - step_time)
            step_time = now
            scale = {"loss_scale": scaler.get_scale()} if scaler is not None else {}
            record = {"step": state.step, "loss": outcome.loss, "lr": lr, "grad_norm": norm, "tokens_per_s": tok_s}
            record.update(tokens=outcome.tokens, mfu=step_mfu)  # non-padding tokens; MFU: tunelab/train/flops.py
            _after_step(ctx, {**record, **scale, **outcome.metrics})
            progress.update(state.step, outcome.loss, tok_s, step_mfu)
    return last_loss


def _checked_mfu(ctx: RunContext, flops: float, seconds: float) -> float | None:
    """The step's MFU, or ``None`` once the probe's peak is known to be wrong.

    A step that runs faster than the device peak means the precision probe (cached per machine) was
    measured while the machine was busy: every MFU against it would be inflated, so the run says so
    once, flags the cached probe so that the next run measures again, and logs no MFU rather than
    a wrong one.
    """
    if ctx.peak_gflops <= 0:
        return None
    value = mfu(flops, seconds, ctx.peak_gflops)
    if value <= 1.0:
        return value
    if ctx.ranks.main:
        achieved = flops / max(seconds, 1e-9) / 1e9
        flagged = mark_stale(ctx.probe_cache)
        fix = (
            "the next run measures the peak again (the cached probe is flagged)"
            if flagged
            else f"delete {ctx.probe_cache or 'the cached probe under $TUNELAB_HOME/precision/'} to measure again"
        )
        console.print(
            f"warning: MFU not reported: this step ran at {achieved:.1f} GFLOP/s, above the precision probe's "
            f"peak of {ctx.peak_gflops:.1f} GFLOP/s (measured while the machine was busy).\n"
            f"  fix: {fix}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    ctx.peak_gflops = 0.0
    return None


def _optimizer_step(ctx: RunContext, take: bool) -> bool:
    """Step the optimizer (when ``take``) and the schedule, clear the gradients; True when the
    fp16 grad scaler refused the update because the gradients overflowed.

    The scaler lowers its scale exactly then. That is the signal to read: a fused AdamW skips
    the overflowing update inside its own ``step``, which accelerate's ``step_was_skipped``
    does not see. The schedule steps on every loop step, also skipped ones, so the LR follows
    ``state.step``; torch warns when it steps before the optimizer ever has, which after a
    skipped first step is intended.
    """
    scaler = ctx.accelerator.scaler
    before = scaler.get_scale() if scaler is not None else None
    if take:
        ctx.optimizer.step()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        ctx.scheduler.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    return take and before is not None and scaler.get_scale() < before


def _load_optimizer(optimizer, saved: dict, ranks: Ranks) -> None:
    """Restore the optimizer state; a checkpoint written under FSDP / ZeRO holds none (its state
    was sharded), and the moments then start afresh."""
    if saved:
        optimizer.load_state_dict(saved)
    elif ranks.main:
        console.print(
            "[yellow]the checkpoint holds no optimizer state (FSDP / DeepSpeed run); "
            "the optimizer moments restart from zero[/yellow]"
        )


def _skipped_step(ctx: RunContext, outcome: StepOutcome, norm: float, overflow: bool) -> None:
    """Record a step that changed no weight; stop the run after ``max_bad_steps`` bad ones in a row.

    An fp16 overflow (the scaler skipped the update and halved its scale) is not a bad step
    while the scale is still >= 1: the scaler is finding its range. Below 1 the gradients
    overflow unscaled, and the step counts like any non-finite one.
    """
    state, args, scaler = ctx.state, ctx.config.training, ctx.accelerator.scaler
    record = {"step": state.step, "skipped": True, "loss": outcome.loss, "grad_norm": norm}
    if overflow and scaler.get_scale() >= 1.0:
        state.overflow_steps += 1
        ctx.metrics.write({**record, "overflow": True, "loss_scale": scaler.get_scale()})
        return
    state.bad_in_a_row += 1
    state.bad_total += 1
    ctx.metrics.write(record)
    if ctx.ranks.main:
        console.print(f"[yellow]step {state.step}: non-finite loss/grad norm; step skipped[/yellow]")
    if state.bad_in_a_row >= args.max_bad_steps:
        raise TrainingError(
            f"{state.bad_in_a_row} non-finite steps in a row (last at step {state.step}); "
            "the run stopped and the last good checkpoint is intact.\n"
            "  fix: lower training.learning_rate, enable max_grad_norm, or use precision=fp32"
        )


def _after_step(ctx: RunContext, record: dict[str, Any]) -> None:
    """Log a taken step, then evaluate and checkpoint when their intervals come round."""
    args, step = ctx.config.training, ctx.state.step
    if step % args.log_every == 0 or step == args.max_steps:
        ctx.metrics.write(record)
        if args.trackers:
            ctx.accelerator.log(record, step=step)
    if args.eval_every and step % args.eval_every == 0 and step < args.max_steps:
        val = _evaluate(ctx.method, ctx.model, ctx.datasets.validation, ctx.config, ctx.accelerator)
        if val:
            ctx.metrics.write({"step": step, **val})
    if args.save_every and step % args.save_every == 0:
        _checkpoint(ctx)


def _checkpoint(ctx: RunContext) -> None:
    state, scaler = ctx.state, ctx.accelerator.scaler
    state.optimizer = ctx.optimizer.state_dict()
    state.scheduler = ctx.scheduler.state_dict()
    state.sampler = ctx.sampler.state_dict()
    state.method = ctx.method.state_dict()
    state.scaler = scaler.state_dict() if scaler is not None else {}
    state.rng = rng_state()
    model = ctx.accelerator.unwrap_model(ctx.model)
    full = distributed.full_state(ctx.accelerator, ctx.model)  # a collective under FSDP / ZeRO-3
    if full is not None:  # sharded optimizer state would resume wrongly under another sharding
        state.optimizer = {}
    if ctx.ranks.main:
        save_checkpoint(ctx.run_dir / "checkpoints", model, state, ctx.config.training.keep_last, weights=full)
    distributed.barrier(ctx.ranks)


def _finish(ctx: RunContext, last_loss: float | None) -> RunResult:
    from tunelab.models.load import save_trained

    config, run_dir, state = ctx.config, ctx.run_dir, ctx.state
    val = _evaluate(ctx.method, ctx.model, ctx.datasets.validation, config, ctx.accelerator)
    if val:
        ctx.metrics.write({"step": state.step, **val})
    unwrapped = ctx.accelerator.unwrap_model(ctx.model)
    out = run_dir / ("model" if config.adapter.type in ("full", "freeze") else "adapter")
    full = distributed.full_state(ctx.accelerator, ctx.model)
    if not ctx.ranks.main:  # the main process writes the result; the others wait for it and return
        distributed.barrier(ctx.ranks)
        distributed.drop_scratch(ctx.ranks, ctx.method.run_dir, run_dir)
        _end_trackers(ctx)
        return RunResult(str(run_dir), config.method, state.step, last_loss, val, 0.0, 0.0, state.bad_total, str(out))
    # the adapter/model + the trained template
    save_trained(unwrapped, ctx.tokenizer, out, config.adapter.type, data=config.data, state_dict=full)
    extra = ctx.method.after_training(unwrapped)
    records = ctx.metrics.records()
    plot_curves(
        records,
        run_dir / "loss.png",
        [("loss", "train loss"), ("val_loss", "validation loss")],
        f"{config.method} · {config.adapter.type} · {config.model.name}",
    )
    wall = time.time() - ctx.start_time
    speeds = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    result = RunResult(
        run_dir=str(run_dir),
        method=config.method,
        steps=state.step,
        final_loss=last_loss,
        val=val,
        tokens_per_s=statistics.median(speeds) if speeds else 0.0,
        wall_s=wall,
        skipped_steps=state.bad_total,
        output=str(out),
        extra=extra,
        overflow_steps=state.overflow_steps,
    )
    (run_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    distributed.barrier(ctx.ranks)
    _end_trackers(ctx)
    result.model = unwrapped
    return result


def _end_trackers(ctx: RunContext) -> None:
    """Close the trackers once every rank is done: accelerate's ``end_training`` also leaves the
    process group, so under several processes it must come after the last barrier."""
    if ctx.config.training.trackers:
        ctx.accelerator.end_training()
