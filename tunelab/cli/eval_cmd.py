"""``tunelab eval suite SUITE --model A [--model B ...] [--min-pass P] [--json F] [--html F] [--repeat N]``.

The ``eval`` group also holds ``perplexity`` and ``harness`` (:mod:`tunelab.cli.eval_bench_cmd`).
The pass-rate table goes to stdout, progress notes to stderr; the exit code is 1 when a model's
pass rate is below ``--min-pass`` (a CI gate), 2 for bad input.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

MODEL_HELP = (
    "Name (tiny, smollm2-135m-instruct), folder, run (runs/NAME), .gguf or OpenAI URL http://host:port/v1#ID "
    "(repeatable; first = baseline)."
)


def register(app: typer.Typer) -> None:
    eval_app = typer.Typer(
        help="Evaluate models: test suites, perplexity, lm-eval harness tasks.", no_args_is_help=True
    )

    @eval_app.command("suite")
    def suite_cmd(
        suite: Path = typer.Argument(..., help="Suite YAML file (examples: examples/eval/*.yaml)."),
        model: list[str] = typer.Option(..., "--model", "-m", help=MODEL_HELP),
        min_pass: float | None = typer.Option(
            None, "--min-pass", min=0, max=1, help="Exit 1 when a model's pass rate is below this share (0-1)."
        ),
        json_out: Path | None = typer.Option(None, "--json", help="Write every case, answer and assertion as JSON."),
        html_out: Path | None = typer.Option(None, "--html", help="Write a self-contained HTML report."),
        repeat: int | None = typer.Option(
            None,
            "--repeat",
            min=1,
            help="Samples per case (overrides the suite's "
            "repeat); a case passes when its min_pass_rate of samples pass.",
        ),
        temperature: float | None = typer.Option(
            None,
            "--temperature",
            min=0,
            help="Default: greedy for one sample, 0.7 when a case is sampled more than once.",
        ),
        seed: int = typer.Option(0, "--seed", help="Sample k of a case uses seed + k."),
        batch_size: int = typer.Option(
            32, "--batch-size", min=1, help="Prompts per forward pass (local models) or requests in flight (URLs)."
        ),
        max_new_tokens: int | None = typer.Option(
            None,
            "--max-new-tokens",
            min=1,
            help="Answer length limit for every case (default: the case's own, else 128).",
        ),
        judge: str | None = typer.Option(None, "--judge", help="Judge model for judge assertions without model:."),
        no_cache: bool = typer.Option(
            False, "--no-cache", help="Generate and grade everything again; write nothing to the cache."
        ),
        device: str = typer.Option("auto", "--device", help="Local models: auto | cpu | cuda."),
        api_key: str | None = typer.Option(None, "--api-key", help="URL models: bearer key (or env TUNELAB_API_KEY)."),
    ):
        """Run a test suite on one or more models: pass rates per tag and model, regressions, reports."""
        from tunelab.evaluate.cache import EvalCache, NoCache
        from tunelab.evaluate.grading import Graders
        from tunelab.evaluate.models import open_model
        from tunelab.evaluate.report import text_report, write_reports
        from tunelab.evaluate.runner import GenerationSettings, run_suite
        from tunelab.evaluate.suite import load_suite

        loaded = load_suite(suite)  # a bad suite fails before any model loads
        key = api_key or os.environ.get("TUNELAB_API_KEY") or None
        models = [open_model(m, batch_size=batch_size, device=device, api_key=key) for m in model]
        settings = GenerationSettings(
            max_new_tokens=max_new_tokens or 128,
            temperature=temperature,
            seed=seed,
            repeat=repeat,
            override_max_new_tokens=max_new_tokens is not None,
        )
        cache = NoCache() if no_cache else EvalCache()
        graders = Graders(cache, default_judge=judge, batch_size=batch_size)
        try:
            run = run_suite(loaded, models, settings, cache=cache, graders=graders)
        finally:
            graders.close()
            for m in models:
                m.close()
            cache.close()
        typer.echo(text_report(run, min_pass))
        write_reports(run, json_out=json_out, html_out=html_out, min_pass=min_pass)
        for path in (json_out, html_out):
            if path is not None:
                typer.echo(f"wrote {path}", err=True)
        if min_pass is not None and run.below(min_pass):
            raise typer.Exit(1)

    from tunelab.cli.eval_bench_cmd import add_commands

    add_commands(eval_app)
    app.add_typer(eval_app, name="eval")
