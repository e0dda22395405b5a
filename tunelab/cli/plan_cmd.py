"""``tunelab plan``: how much memory a training run or an inference setting needs, and where it fits.

Human output goes to the console (stderr); ``--json`` prints the machine-readable plan on stdout.
This module never imports torch (a test checks it).
"""

from __future__ import annotations

import json
import sys

import typer

from tunelab.errors import ConfigError


def _fail_unknown(flag: str, value: str, valid) -> None:
    raise ConfigError(f"{flag}: unknown value '{value}'. Valid: {', '.join(valid)}")


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(
        model: str = typer.Option(None, "--model", "-m", help="Preset (llama-3.1-8b), model folder, or runs/NAME."),
        params: float = typer.Option(None, "--params", help="Parameter count for the seed rule alone, e.g. 7e9."),
        bits: int = typer.Option(None, "--bits", help="Weight bits: 32, 16, 8 or 4 (inference; seed rule Q)."),
        seed_rule: bool = typer.Option(False, "--seed-rule", help="Print only the rule M = P·4B/(32/Q)·1.2."),
        method: str = typer.Option(None, "--method", help="sft/dpo/orpo/kto/reward/ppo/distill or an adapter type."),
        adapter: str = typer.Option(None, "--adapter", help="lora, qlora, dora, prompt_tuning, prefix_tuning, "
                                    "llama_adapter, freeze, full."),
        inference: bool = typer.Option(False, "--inference", help="Plan serving instead of training."),
        quant: str = typer.Option(None, "--quant", help="Inference weight format: fp32 bf16 int8 nf4 nf4-dq q8_0 "
                                  "q4_0 q4_k_m."),
        context: int = typer.Option(4096, "--context", help="Inference: tokens of context per sequence."),
        kv_dtype: str = typer.Option("bf16", "--kv-cache-dtype", help="bf16, fp8, q8_0, q4_0."),
        batch_size: int = typer.Option(None, "--batch-size", "-b", help="Micro-batch (training) or batch (inference)."),
        seq_len: int = typer.Option(None, "--seq-len", help="Training sequence length (data.max_length)."),
        grad_accum: int = typer.Option(None, "--grad-accum", help="Gradient accumulation steps."),
        checkpointing: bool = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
        optimizer: str = typer.Option(None, "--optimizer", help="adamw, adamw_8bit, paged_adamw, "
                                      "paged_adamw_8bit, sgd."),
        precision: str = typer.Option(None, "--precision", help="fp32, mixed (fp32 master + bf16 autocast), bf16."),
        attn: str = typer.Option(None, "--attn", help="sdpa, flash_attention_2, eager."),
        lora_r: int = typer.Option(None, "--lora-r", help="LoRA rank."),
        gpus: int = typer.Option(1, "--gpus", help="GPUs (data parallel)."),
        sharding: str = typer.Option("none", "--sharding", help="none, ddp, zero1, zero2, zero3, fsdp."),
        offload: bool = typer.Option(False, "--offload", help="Offload optimizer state (and ZeRO-3 params) to CPU."),
        reference: str = typer.Option(None, "--reference", help="DPO/KTO/PPO reference: adapter, model, "
                                      "precomputed."),
        teacher: str = typer.Option(None, "--teacher", help="Distillation teacher (preset or model)."),
        reward_model: str = typer.Option(None, "--reward-model", help="PPO reward model (default: same as policy)."),
        device: str = typer.Option("cuda", "--device", help="cuda or cpu (dropout masks, CPU RAM list)."),
        overhead_gib: float = typer.Option(None, "--overhead-gib", help="Runtime overhead (default 0.5 GiB)."),
        fit: str = typer.Option(None, "--fit", help="Device to fit (rtx-4090, a100-80gb, cpu ...): find a change."),
        as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout."),
    ):
        """Estimate peak memory (weights, adapter, gradients, optimizer, activations, logits, KV cache)."""
        from tunelab.memory import plan_request as req
        from tunelab.utils.log import console

        if params is not None and model is None:
            if not seed_rule:
                raise ConfigError("--params alone gives only the seed rule: add --seed-rule, or use --model")
            value = req.seed_rule_only(params, bits or 16)
            if as_json:
                sys.stdout.write(json.dumps(value.to_json()) + "\n")
            console.print(req.seed_rule_line(params, bits or 16))
            return
        if model is None:
            raise ConfigError("tunelab plan needs --model (a preset, a model folder or runs/NAME) or --params")
        flags = req.PlanFlags(
            model=model, method=method, adapter=adapter, inference=inference, bits=bits, quant=quant,
            context=context, kv_dtype=kv_dtype, batch_size=batch_size, seq_len=seq_len, grad_accum=grad_accum,
            checkpointing=checkpointing, optimizer=optimizer, precision=precision, attn=attn, lora_r=lora_r,
            gpus=gpus, sharding=sharding, offload=offload, reference=reference, teacher=teacher,
            reward_model=reward_model, device=device, overhead_gib=overhead_gib,
        )
        result = req.make_plan(flags, fit_device=fit)
        if as_json:
            sys.stdout.write(json.dumps(result.estimate.to_json()) + "\n")
        if seed_rule:
            console.print(req.seed_rule_line(result.estimate.params, result.estimate.seed_bits))
            return
        _print_plan(console, result)


def _gib(value: float) -> str:
    return f"{value / 2**30:,.2f}"


def _print_plan(console, result) -> None:
    """Breakdown table, seed rule, "fits on" list and the --fit outcome."""
    from rich.table import Table

    from tunelab.memory.devices import fits_on
    from tunelab.memory.estimate import GB, ROWS

    est = result.estimate
    table = Table(title=result.title, title_justify="left")
    table.add_column("component")
    table.add_column("GiB", justify="right")
    table.add_column("how", style="dim")
    for name, value in est.breakdown().items():
        if value or name in ("weights", "gradients", "optimizer", "activations", "kv_cache", "overhead"):
            table.add_row(name, _gib(value), est.details.get(name) or ROWS[name])
    origin = f"{est.params:,} params; source {result.source.origin}"
    table.add_row("[bold]total[/bold]", f"[bold]{_gib(est.total)}[/bold]", origin)
    rule = f"P·4 B/(32/Q)·1.2 with Q={est.seed_bits:g} (decimal GB)"
    table.add_row("seed rule", f"{est.seed_rule / GB:.1f} GB", rule)
    console.print(table)
    for note in est.notes:
        console.print(f"[dim]note: {note}[/dim]")
    if est.cpu_offload:
        console.print(f"CPU RAM for offloaded state: {_gib(est.cpu_offload)} GiB")
    fits = ", ".join(f"[green]{d.key}[/green]" if ok else f"[red]{d.key}[/red]" for d, ok in fits_on(est.total))
    console.print(f"fits on (green): {fits}")
    if result.fit is not None:
        _print_fit(console, result)


def _print_fit(console, result) -> None:
    fit = result.fit
    if not fit.changes:
        console.print(f"[green]fits on {result.fit_device} as is[/green]")
        return
    verdict = "[green]fits[/green]" if fit.fits else "[red]still does not fit[/red]"
    console.print(f"to fit {result.fit_device}: " + "; then ".join(fit.changes) + f" → {verdict}")
    console.print(fit.estimate.summary())
