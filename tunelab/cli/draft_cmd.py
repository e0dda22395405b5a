"""``tunelab draft MODEL_OR_RUN [--layers N | --keep F] [--prompts FILE] [--steps N] --out DIR``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tunelab.compress.draft import DraftOptions as D  # the defaults live in one place: the dataclass


def print_report(report) -> None:
    from tunelab.utils.log import console

    s = report.speed
    lines = [
        f"draft: {report.draft_layers} of {report.target_layers} layers (dropped {report.dropped_layers}), "
        f"{report.draft_params:,} parameters ({report.draft_params / report.target_params:.2f}x the target)",
        f"distilled on {report.train_prompts} target answers ({report.generated_tokens} tokens), "
        f"{report.distill['steps']} steps",
        f"draft runs with a head of {report.runtime['head_tokens'] or 'all'} tokens "
        f"({s.coverage:.1%} of the measured target tokens), weights {report.runtime['quantize']}, "
        f"up to {s.num_draft} drafted per step while its confidence is >= {report.runtime['min_confidence']}",
        f"measured on {s.prompts} held-out prompts, {s.new_tokens} greedy tokens:",
        f"  acceptance rate   {s.acceptance_rate:.3f}  ({s.accepted}/{s.drafted} drafted tokens accepted)",
        f"  speedup           {s.speedup:.2f}x  (target alone {s.target_s:.1f} s, "
        f"with the draft {s.speculative_s:.1f} s)",
        f"  greedy identical  {'yes' if s.identical else 'NO'}",
        "stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in report.stage_s.items()),
        f"saved {report.out} (a Hugging Face folder; draft.json holds these numbers)",
        f"next: tunelab serve {report.target} --speculation draft --draft {report.out}",
    ]
    for line in lines:
        console.print(line, highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("draft")
    def draft_cmd(
        target: str = typer.Argument(..., help="Target model name/folder or run folder (merged first)."),
        out: Path = typer.Option(..., "--out", help="Output folder: the draft model + draft.json."),
        layers: int = typer.Option(None, "--layers", help="Decoder layers the draft keeps."),
        keep: float = typer.Option(None, "--keep", help="Or: fraction of the target's layers kept (default 0.25)."),
        prompts: Path = typer.Option(None, "--prompts", help="Prompt file (.jsonl or .txt); default: a bundled set."),
        steps: int = typer.Option(D.steps, "--steps", help="Distillation steps."),
        minutes: float = typer.Option(
            None, "--minutes", help="Distillation time budget (no step starts after it; the LR decays over it)."
        ),
        max_prompts: int = typer.Option(None, "--max-prompts", help="Use at most this many prompts."),
        gen_tokens: int = typer.Option(
            D.gen_tokens, "--gen-tokens", help="Longest target answer generated for training."
        ),
        gen_batch: int = typer.Option(
            D.gen_batch,
            "--gen-batch",
            help="Prompts the target answers at once (bigger batches use the cores better; each row holds a KV cache).",
        ),
        batch_size: int = typer.Option(D.batch_size, "--batch-size", help="Packed rows per distillation step."),
        learning_rate: float = typer.Option(D.learning_rate, "--lr", help="Distillation learning rate."),
        num_draft: int = typer.Option(D.num_draft, "--num-draft", help="Most tokens drafted per target forward."),
        min_confidence: float = typer.Option(
            D.min_confidence,
            "--min-confidence",
            help="Stop drafting at a token the draft gives less probability (0: always --num-draft).",
        ),
        head_tokens: int = typer.Option(
            D.head_tokens,
            "--head-tokens",
            help="The draft's output head keeps the target's N most frequent tokens (0: all).",
        ),
        quantize: str = typer.Option(
            D.quantize, "--quantize", help="The draft's weights when drafting: int8 (CPU) | none."
        ),
        eval_prompts: int = typer.Option(D.eval_prompts, "--eval-prompts", help="Held-out prompts timed."),
        eval_tokens: int = typer.Option(D.eval_tokens, "--eval-tokens", help="Greedy tokens per timed prompt."),
        device: str = typer.Option(D.device, "--device", help="auto | cpu | cuda."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out (once done)."),
        as_json: bool = typer.Option(False, "--json", help="Print the report (draft.json) on stdout."),
    ):
        """Build a draft model for speculative decoding: depth-prune the target, distill it on the
        target's own greedy answers, then measure acceptance rate and speedup (outputs identical)."""
        from tunelab.compress.draft import DraftOptions, build_draft
        from tunelab.utils.log import console

        options = DraftOptions(
            layers=layers,
            keep=keep,
            prompts=str(prompts) if prompts else None,
            steps=steps,
            minutes=minutes,
            max_prompts=max_prompts,
            gen_tokens=gen_tokens,
            gen_batch=gen_batch,
            batch_size=batch_size,
            learning_rate=learning_rate,
            num_draft=num_draft,
            min_confidence=min_confidence,
            head_tokens=head_tokens,
            quantize=quantize,
            eval_prompts=eval_prompts,
            eval_tokens=eval_tokens,
            device=device,
        )
        report = build_draft(
            target, out, options, overwrite=overwrite, log=lambda line: console.print(line, highlight=False)
        )
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        else:
            print_report(report)
