"""``tunelab export RUN --format hf|adapter|gguf|bnb-nf4|bnb-int8 [--quant Q] [--out DIR [--overwrite]] [--verify]``."""

from __future__ import annotations

from pathlib import Path

import typer

from tunelab.models.safe_load import CLI_HELP


def _print_export(result) -> None:
    from tunelab.utils.log import console

    console.print(f"[bold green]exported[/bold green] {result.format} → {result.path}")
    for note in result.notes:
        console.print(f"  [dim]{note}[/dim]")
    if result.eos_token_ids:
        console.print(f"  [dim]EOS ids: {result.eos_token_ids}[/dim]")


def _print_report(report) -> None:
    from rich.table import Table

    from tunelab.utils.log import console

    for target in report.targets:
        table = Table(title=f"{target.name} ({target.kind}) vs the trained run", show_footer=True)
        table.add_column("prompt", footer="overall", max_width=48)
        table.add_column("run tokens", justify="right")
        table.add_column("export tokens", justify="right")
        table.add_column("agreement", justify="right", footer=f"{target.agreement:.1%}")
        table.add_column("first mismatch", justify="right", footer=f"{target.exact}/{len(target.prompts)} exact")
        for p in target.prompts:
            first = "-" if p.first_mismatch is None else str(p.first_mismatch)
            table.add_row(p.prompt, str(p.reference_tokens), str(p.export_tokens), f"{p.agreement:.1%}", first)
        console.print(table)
        if target.max_logit_diff is not None:
            console.print(f"  largest |logit difference| (teacher-forced): {target.max_logit_diff:.3g}")
        for problem in target.problems:
            console.print(f"  [red]{problem}[/red]")


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        run: Path = typer.Argument(..., help="Run folder (runs/NAME)."),
        fmt: str = typer.Option(None, "--format", "-f", help="hf | adapter | gguf | bnb-nf4 | bnb-int8 | space."),
        quant: str = typer.Option("f16", "--quant", help="GGUF: f32 | f16 | q8_0 | q4_0."),
        out: Path = typer.Option(None, "--out", help="Output folder (default RUN/export/FORMAT)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace a non-empty output folder (only once the new export is complete)."
        ),
        dtype: str = typer.Option("auto", "--dtype", help="hf: auto | fp32 | bf16 | fp16."),
        modelfile: bool = typer.Option(True, "--modelfile/--no-modelfile", help="GGUF: write an Ollama Modelfile."),
        verify: bool = typer.Option(False, "--verify", help="Compare the export(s) with the trained run."),
        prompts: Path = typer.Option(None, "--prompts", help="Verify prompts: .txt (one per line) or .jsonl."),
        max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Verify: greedy tokens per prompt."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help=CLI_HELP),
    ):
        """Merge and export a run; --verify proves the export answers like the run (writes verify.json)."""
        from tunelab.errors import ConfigError
        from tunelab.models.safe_load import pickle_allowed

        if fmt is None and not verify:
            raise ConfigError("tunelab export: give --format FORMAT, --verify, or both")
        target = out
        with pickle_allowed(allow_pickle):  # the run's base (and adapter) load inside export and verify
            if fmt is not None:
                from tunelab.export import export

                result = export(run, fmt, out, quant=quant, dtype=dtype, modelfile=modelfile, overwrite=overwrite)
                _print_export(result)
                target = result.path
            if verify:
                from tunelab.export.verify import verify as run_verify

                report = run_verify(run, [target or run / "export"], prompts, max_new_tokens)
                _print_report(report)
