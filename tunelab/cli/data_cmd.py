"""``tunelab data inspect FILE`` and ``tunelab data prepare FILE --out FOLDER``.

Only the tokenizer is loaded (never model weights): data commands stay fast on a laptop.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

MODEL_HELP = "Model whose tokenizer/chat template to use: a name (tiny, smollm2-135m-instruct) or a folder."
TEMPLATE_HELP = "'chat' (the model's own chat template), 'alpaca', 'qa', or a path to a Jinja file."
FORMAT_HELP = "auto, alpaca, qa, messages, sharegpt or text."
COLUMN_HELP = "Map our column name to yours, e.g. --column instruction=prompt (repeatable)."
HIST_WIDTH = 40


def parse_columns(items: list[str] | None) -> dict[str, str]:
    """``["ours=theirs", ...]`` → ``{ours: theirs}``."""
    from tunelab.errors import ConfigError

    columns = {}
    for item in items or []:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ConfigError(f"--column '{item}' is not OURS=YOURS (e.g. --column instruction=prompt)")
        columns[ours.strip()] = theirs.strip()
    return columns


def data_args(**fields):
    """A validated DataArgs; invalid flag values become one ConfigError naming each flag."""
    from pydantic import ValidationError

    from tunelab.config import DataArgs
    from tunelab.errors import ConfigError

    try:
        return DataArgs(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        problems = [f"  --{str(e['loc'][0]).replace('_', '-')}: {e.get('input')!r} — {e['msg']}" for e in err.errors()]
        raise ConfigError("invalid option(s):\n" + "\n".join(problems)) from None


def tokenizer_for(model: str):
    from tunelab.models.load import load_tokenizer
    from tunelab.models.resolve import resolve_model

    return load_tokenizer(resolve_model(model).path)


def print_inspection(result) -> None:
    """Summary table, length histogram and the marked sample."""
    from tunelab.utils.log import console

    s = result.lengths
    table = Table(title="dataset", show_header=False)
    for key, value in [
        ("format", result.format), ("template", result.template), ("rows read", result.rows_read),
        ("examples", result.examples), ("rejected", result.rejected),
        ("tokens min / median / p95 / max", f"{s.min} / {s.median:g} / {s.p95:g} / {s.max}"),
        (f"truncated at max_length={result.max_length}", f"{result.truncated} of {result.examples}"),
    ]:
        table.add_row(key, str(value))
    console.print(table)
    peak = max((b.count for b in result.histogram), default=1) or 1
    console.print("[bold]token lengths[/bold]")
    for b in result.histogram:
        bar = "█" * max(1 if b.count else 0, round(HIST_WIDTH * b.count / peak))
        over = ""
        if b.high > result.max_length:
            over = " [red](over max_length)[/red]" if b.low > result.max_length else " [red](partly over)[/red]"
        console.print(f"  {b.low:>6}–{b.high:<6} {bar} {b.count}{over}", highlight=False)
    console.print(f"\n[bold]example[/bold] {escape(result.sample_where)}: {result.sample_trained_tokens} of "
                  f"{result.sample_tokens} tokens trained", highlight=False)
    console.print(Text.assemble(("legend: ", "bold"), (marked("trained (in the loss)"), "bold green underline"),
                                "  ", ("prompt (label -100, unmarked)", "dim")))
    sample = Text()
    for text, trained in result.sample_spans:
        sample.append(marked(text) if trained else text, style="bold green underline" if trained else "dim")
    console.print(sample)


def marked(text: str) -> str:
    """Trained text between the markers (the style only repeats what the markers say)."""
    from tunelab.data.inspect import TRAINED_CLOSE, TRAINED_OPEN

    return f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}"


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Inspect and prepare datasets.", no_args_is_help=True)

    @data_app.command("inspect")
    def inspect_cmd(
        file: Path = typer.Argument(..., help="Dataset: .jsonl, .json, .csv, .parquet or a saved HF dataset folder."),
        model: str = typer.Option("smollm2-135m-instruct", "--model", help=MODEL_HELP),
        template: str = typer.Option("chat", "--template", help=TEMPLATE_HELP),
        format: str = typer.Option("auto", "--format", help=FORMAT_HELP),
        max_length: int = typer.Option(512, "--max-length", help="Tokens per example; longer ones are counted."),
        column: list[str] = typer.Option(None, "--column", help=COLUMN_HELP),
        system_prompt: str = typer.Option(None, "--system-prompt", help="System message for rows without one."),
        skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip (and count) invalid rows."),
        sample: int = typer.Option(0, "--sample", help="Index of the example to show rendered."),
    ):
        """Detected format, token-length statistics, truncation and one rendered example."""
        from tunelab.data import inspect_data
        from tunelab.security.scan.preflight import print_preflight

        args = data_args(path=str(file), template=template, format=format, max_length=max_length,
                         columns=parse_columns(column), system_prompt=system_prompt, skip_invalid=skip_invalid)
        result = inspect_data(args.path, tokenizer_for(model), args.template, args.format, args.max_length,
                              args.columns, args.system_prompt, args.skip_invalid, sample)
        print_inspection(result)
        print_preflight(args.path, args.format, args.columns)

    @data_app.command("prepare")
    def prepare_cmd(
        file: Path = typer.Argument(..., help="Dataset: .jsonl, .json, .csv, .parquet or a saved HF dataset folder."),
        out: Path = typer.Option(..., "--out", help="Folder for train/, validation/, report.json, rejects.jsonl."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
        model: str = typer.Option("smollm2-135m-instruct", "--model", help=MODEL_HELP),
        template: str = typer.Option("chat", "--template", help=TEMPLATE_HELP),
        format: str = typer.Option("auto", "--format", help=FORMAT_HELP),
        max_length: int = typer.Option(512, "--max-length", help="Tokens per example (and per packed row)."),
        packing: bool = typer.Option(True, "--packing/--no-packing", help="Pack examples into rows."),
        column: list[str] = typer.Option(None, "--column", help=COLUMN_HELP),
        system_prompt: str = typer.Option(None, "--system-prompt", help="System message for rows without one."),
        train_on_prompt: bool = typer.Option(False, "--train-on-prompt", help="Also train on prompt tokens."),
        validation_split: float = typer.Option(0.1, "--validation-split", help="Fraction held out (seeded)."),
        validation_path: Path = typer.Option(None, "--validation-path", help="Separate validation file."),
        seed: int = typer.Option(42, "--seed", help="Seed of the train/validation split."),
        skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Drop invalid rows into rejects.jsonl."),
    ):
        """Tokenize, mask, truncate, split and pack a dataset; `tunelab train` can use data.path=OUT."""
        from tunelab.data import prepare, save_prepared
        from tunelab.utils.log import console

        args = data_args(path=str(file), template=template, format=format, max_length=max_length, packing=packing,
                         columns=parse_columns(column), system_prompt=system_prompt, train_on_prompt=train_on_prompt,
                         validation_split=validation_split, seed=seed, skip_invalid=skip_invalid,
                         validation_path=str(validation_path) if validation_path else None)
        prepared = prepare(args, tokenizer_for(model))
        folder = save_prepared(prepared, out, overwrite=overwrite)
        r = prepared.report
        console.print(
            f"[green]prepared[/green] {r.train_examples} train / {r.validation_examples} validation examples "
            f"({r.format}, template {r.template}) → {r.train_rows} / {r.validation_rows} rows of ≤{r.max_length} "
            f"tokens (packing efficiency {r.packing_efficiency.get('train', 0):.0%}); "
            f"truncated {r.truncated}, dropped {r.dropped}, rejected {r.rejected}", highlight=False)
        console.print(f"wrote {escape(str(folder))}/ (train/, validation/, report.json"
                      f"{', rejects.jsonl' if prepared.rejects else ''})", highlight=False)

    app.add_typer(data_app, name="data")
