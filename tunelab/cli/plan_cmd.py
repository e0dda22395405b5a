"""``tunelab plan``: how much memory a training run or an inference setting needs, and where it fits.

Human output goes to the console (stderr); ``--json`` prints the machine-readable plan on stdout.
This module never imports torch (a test checks it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
        accelerate_config: Path = typer.Option(None, "--accelerate-config", help="Take --gpus, --sharding and "
                                               "--offload from an accelerate config (examples/accelerate/)."),
        reference: str = typer.Option(None, "--reference", help="DPO/KTO/PPO reference: adapter, model, "
                                      "precomputed."),
        teacher: str = typer.Option(None, "--teacher", help="Distillation teacher (preset or model)."),
        reward_model: str = typer.Option(None, "--reward-model", help="PPO reward model (default: same as policy)."),
        device: str = typer.Option("cuda", "--device", help="cuda or cpu (dropout masks, CPU RAM list)."),
        overhead_gib: float = typer.Option(None, "--overhead-gib", help="Runtime overhead (default 0.5 GiB)."),
        target_modules: str = typer.Option(None, "--target-modules", help="Adapter targets, comma-separated "
                                           "(q_proj,v_proj) or all-linear (the default)."),
        lora_dropout: float = typer.Option(None, "--lora-dropout", help="LoRA dropout (0: no dropout masks)."),
        double_quant: bool = typer.Option(None, "--double-quant/--no-double-quant", help="NF4 double "
                                          "quantization of the scales (default on)."),
        profile: str = typer.Option(None, "--profile", help=profile_help()),
        adapter_dtype: str = typer.Option(None, "--adapter-dtype", help="Adapter weights, gradients and moments: "
                                          "fp32 (peft) or bf16/fp16 (bf16-true toolkits)."),
        chunked_loss: bool = typer.Option(None, "--chunked-loss/--full-loss", help="chunked: only the 16-bit "
                                          "logits are kept (torchtune CEWithChunkedOutputLoss); full: an fp32 "
                                          "log-softmax over every logit."),
        recomputed_loss: bool = typer.Option(None, "--recomputed-loss/--no-recomputed-loss", help="recomputed: "
                                             "no logits kept, the head + log-softmax recomputed per chunk in "
                                             "backward (tunelab's loss, tunelab/methods/lm_loss.py)."),
        optimizer_in_backward: bool = typer.Option(None, "--optimizer-in-backward/--no-optimizer-in-backward",
                                                   help="Step each tensor in its gradient hook: one gradient "
                                                   "alive at a time (torchtune optimizer_in_bwd)."),
        offload_activations: bool = typer.Option(None, "--offload-activations/--no-offload-activations",
                                                 help="Saved activations (checkpointed block inputs) in CPU RAM."),
        bnb_kept_inputs: bool = typer.Option(None, "--bnb-kept-inputs/--no-bnb-kept-inputs", help="bitsandbytes "
                                             "< 0.45: every 4-bit linear keeps its input for backward."),
        keep_previous_graph: bool = typer.Option(None, "--keep-previous-graph/--no-keep-previous-graph",
                                                 help="The loop holds last step's logits (and graph) until the "
                                                 "next forward returns (LitGPT fit())."),
        quantized_head: bool = typer.Option(None, "--quantized-head/--no-quantized-head", help="The output head "
                                            "is NF4 too (Lightning Fabric's bitsandbytes plugin)."),
        dequant_copies: int = typer.Option(None, "--dequant-copies", help="Full-size copies per dequantized "
                                           "weight (1; Fabric's fp16 quant state cast to bf16: 2)."),
        kbit_upcast: bool = typer.Option(None, "--kbit-upcast/--no-kbit-upcast", help="peft's "
                                         "prepare_model_for_kbit_training: a quantized model's other params fp32."),
        fit: str = typer.Option(None, "--fit", help="Device to fit (rtx-4090, a100-80gb, cpu ...): find a change."),
        as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout."),
    ):
        """Estimate peak memory (weights, adapter, gradients, optimizer, activations, logits, KV cache)."""
        options = dict(locals())  # every option by name: PlanFlags takes those it has
        if accelerate_config is not None:  # its engine and process count (tunelab/memory/accelerate_config.py)
            from tunelab.memory.accelerate_config import read_accelerate_config

            engine = read_accelerate_config(accelerate_config)
            options.update(gpus=engine.gpus, sharding=engine.sharding, offload=offload or engine.offload)
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
        result = req.make_plan(req.plan_flags(options), fit_device=fit)
        if as_json:
            sys.stdout.write(json.dumps(result.to_json()) + "\n")
        if seed_rule:
            console.print(req.seed_rule_line(result.estimate.params, result.estimate.seed_bits))
            return
        _print_plan(console, result)


def profile_help() -> str:
    from tunelab.memory.profiles import help_text

    return help_text()


def flags_from_argv(argv: list[str]):
    """``tunelab plan`` arguments parsed by the command's own options into ``PlanFlags``.

    bench/memory_published.py runs each published case's command line through this, so the
    comparison in docs/memory.md is the CLI's number, not a parallel construction.
    """
    import typer.main

    from tunelab.memory.plan_request import plan_flags

    app = typer.Typer()
    register(app)
    context = typer.main.get_command(app).make_context("plan", list(argv))
    return plan_flags(context.params)


def _gib(value: float) -> str:
    return f"{value / 2**30:,.2f}"


def _print_plan(console, result) -> None:
    """Breakdown table, seed rule, where it fits (in words) and the --fit outcome."""
    from rich.table import Table

    from tunelab.memory.devices import fit_lines
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
    for line in fit_lines(est.total):
        console.print(line, highlight=False, markup=False)
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
