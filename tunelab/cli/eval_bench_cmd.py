"""``tunelab eval perplexity DATA --model M`` and ``tunelab eval harness --tasks T --model M``.

:func:`add_commands` is called by :mod:`tunelab.cli.eval_cmd` on its ``eval`` group. Results go
to stdout (a summary line, or JSON with ``--json``); progress and notes go to stderr.
"""

from __future__ import annotations

import json
import os
import sys

import typer

from tunelab.models.safe_load import CLI_HELP

MODEL_HELP = "A model name (tiny, smollm2-135m-instruct), model folder, .gguf file or run folder (runs/NAME)."
DTYPE_HELP = "Weight dtype: auto (the fastest measured here), fp32, bf16, fp16."


def add_commands(eval_app: typer.Typer) -> None:
    """Add ``perplexity`` and ``harness`` to the ``tunelab eval`` group."""

    @eval_app.command("perplexity")
    def perplexity_cmd(
        data: str = typer.Argument(
            ..., help="Dataset: jsonl/json/csv/parquet rows (text, messages, alpaca, ...) or a .txt file (one text)."
        ),
        model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
        scope: str = typer.Option(
            "trained",
            "--scope",
            help="trained: the tokens training puts a loss on (chat answers, all of a text row); all: every token.",
        ),
        max_length: int | None = typer.Option(
            None,
            "--max-length",
            min=2,
            help="Window in tokens; longer rows slide (default: the model's context, at most 2048).",
        ),
        stride: int | None = typer.Option(None, "--stride", min=1, help="Tokens between windows (default max/2)."),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Windows per forward pass."),
        dtype: str = typer.Option("auto", "--dtype", help=DTYPE_HELP),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help=CLI_HELP),
    ):
        """Perplexity: exp of the token-weighted mean NLL, chat rows through the model's chat template."""
        from tunelab.errors import ConfigError
        from tunelab.evaluate.perplexity import perplexity
        from tunelab.evaluate.scoring import load_scoring_model
        from tunelab.models.safe_load import pickle_allowed

        if scope not in ("trained", "all"):
            raise ConfigError(f"--scope {scope}: unknown\n  fix: use --scope trained or --scope all")
        with pickle_allowed(allow_pickle):
            scorer = load_scoring_model(model, dtype=_dtype(dtype), device=device)
        result = perplexity(scorer, data, scope=scope, max_length=max_length, stride=stride, batch_size=batch_size)
        if as_json:
            typer.echo(json.dumps(result.to_dict()))
            return
        typer.echo(
            f"perplexity {result.perplexity:.4f}  (mean NLL {result.nll:.4f} nats/token over "
            f"{result.tokens} {scope} tokens of {result.examples} rows, {result.windows} windows of "
            f"{result.max_length} stride {result.stride}, {result.dtype}, model {result.model})"
        )

    @eval_app.command("harness")
    def harness_cmd(
        tasks: str = typer.Option(
            ...,
            "--tasks",
            "-t",
            help="Comma-separated lm-eval tasks, groups or tags: the "
            "bundled tunelab_mc, tunelab_gen, tunelab_rolling (tag: tunelab) or lm-eval's own.",
        ),
        model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
        include_path: list[str] = typer.Option(
            [], "--include-path", help="A folder of your own lm-eval task YAMLs (repeatable)."
        ),
        limit: float | None = typer.Option(
            None, "--limit", min=0, help="At most N documents per task (a value below 1 is a fraction)."
        ),
        num_fewshot: int | None = typer.Option(None, "--num-fewshot", min=0, help="Few-shot examples per prompt."),
        batch_size: str = typer.Option("auto", "--batch-size", help="Rows per forward pass, or auto."),
        dtype: str = typer.Option("auto", "--dtype", help=DTYPE_HELP),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        chat_template: bool = typer.Option(
            False,
            "--apply-chat-template",
            help="Wrap prompts in the model's chat template (for instruction-tuned models and runs).",
        ),
        output: str | None = typer.Option(None, "--output", "-o", help="Write lm-eval's results JSON here."),
        log_samples: bool = typer.Option(False, "--log-samples", help="With --output: every request and answer."),
        as_json: bool = typer.Option(False, "--json", help="Print the per-task metrics as JSON on stdout."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help=CLI_HELP),
    ):
        """Standard benchmarks: a tunelab model or run as an lm-evaluation-harness model."""
        import logging

        from tunelab.errors import ConfigError
        from tunelab.models.safe_load import pickle_allowed

        try:
            from lm_eval.utils import make_table

            from tunelab.evaluate.harness import TunelabLM, run_harness
        except ImportError as err:
            raise ConfigError(
                f"tunelab eval harness needs lm-evaluation-harness ({err})\n  fix: pip install 'tunelab[eval]'"
            ) from None
        if batch_size != "auto" and not batch_size.isdigit():
            raise ConfigError(f"--batch-size {batch_size}: not a number\n  fix: pass --batch-size 16 or auto")
        logging.getLogger("lm_eval").setLevel(logging.ERROR)  # per-task notes about custom datasets
        if not sys.stderr.isatty():
            os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's progress bars are carriage-return noise in a log
        names = [t.strip() for t in tasks.split(",") if t.strip()]
        with pickle_allowed(allow_pickle):
            lm = TunelabLM(model, batch_size=batch_size, dtype=_dtype(dtype), device=device)
        results = run_harness(
            lm,
            names,
            include_paths=include_path,
            limit=_limit(limit),
            num_fewshot=num_fewshot,
            apply_chat_template=chat_template,
            log_samples=log_samples and output is not None,
        )
        if output:
            from pathlib import Path

            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_text(json.dumps(results, indent=2, default=str))
        if as_json:
            typer.echo(json.dumps(results["results"], default=str))
        else:
            typer.echo(make_table(results))
            if "groups" in results:
                typer.echo(make_table(results, "groups"))


def _limit(value: float | None) -> int | float | None:
    return int(value) if value is not None and value >= 1 else value


def _dtype(value: str) -> str:
    from tunelab.errors import ConfigError

    if value not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"--dtype {value}: unknown\n  fix: use auto, fp32, bf16 or fp16")
    return value
