"""``tunelab eval perplexity DATA --model M`` and ``tunelab eval harness --tasks T --model M``.

:func:`add_commands` is called by :mod:`tunelab.cli.eval_cmd` on its ``eval`` group. Results go
to stdout (a summary line, or JSON with ``--json``); progress and notes go to stderr.
"""

from __future__ import annotations

import json

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


def _dtype(value: str) -> str:
    from tunelab.errors import ConfigError

    if value not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"--dtype {value}: unknown\n  fix: use auto, fp32, bf16 or fp16")
    return value
