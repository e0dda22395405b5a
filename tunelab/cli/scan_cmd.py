"""``tunelab scan DATA [--json] [--quarantine OUT]``: poisoning, duplicate, PII and injection scan.

Human output goes to the console (stderr) as one whole line per reason, so it stays readable in
a pipe, a CI log and without colour; ``--json`` prints the per-row report on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from tunelab.cli.data_cmd import COLUMN_HELP, FORMAT_HELP, parse_columns

DATA_HELP = "Dataset: .jsonl, .json, .csv, .parquet or a saved HF dataset folder (any format tunelab reads)."


def print_summary(report) -> None:
    """A header line, then one aligned line per reason: rows, example lines, meaning and an example."""
    from rich.markup import escape

    from tunelab.utils.log import console

    console.print(f"scanned {escape(report.path)} ({report.format}): {len(report.rows)} rows in "
                  f"{report.seconds:.2f} s, {len(report.flagged)} flagged", highlight=False)
    summary = report.summary()
    if not summary:
        return
    width = max(len("reason"), *(len(s.reason) for s in summary))
    console.print(f"  {'reason':<{width}}  {'rows':>6}  {'lines':<22}  meaning (example)", highlight=False)
    for s in summary:
        more = ", ..." if s.rows > len(s.lines) else ""
        lines = ", ".join(map(str, s.lines)) + more
        console.print(f"  {s.reason:<{width}}  {s.rows:>6}  {lines:<22}  {s.meaning} ({s.detail})",
                      highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    @app.command("scan")
    def scan_cmd(
        data: Path = typer.Argument(..., help=DATA_HELP),
        as_json: bool = typer.Option(False, "--json", help='Print {"rows": N, "flagged": [{"line", "reasons"}]} '
                                     "on stdout (1-based lines of the input file)."),
        quarantine: Path = typer.Option(None, "--quarantine", help="Folder for clean.jsonl, rejected.jsonl (rows add "
                                        "up to the input) and scan.json."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --quarantine folder."),
        format: str = typer.Option("auto", "--format", help=FORMAT_HELP + " Also preference, unpaired, prompt."),
        column: list[str] = typer.Option(None, "--column", "--columns", help=COLUMN_HELP),
    ):
        """Find duplicates, conflicting answers, PII and secrets, special tokens, injection text and backdoor
        triggers in a dataset (no model needed); --quarantine splits it into clean and rejected rows."""
        from rich.markup import escape

        from tunelab.security.scan import scan_file
        from tunelab.security.scan.quarantine import write_quarantine
        from tunelab.utils.log import console

        report = scan_file(data, format, parse_columns(column))
        if as_json:
            sys.stdout.write(json.dumps(report.to_json()) + "\n")
        else:
            print_summary(report)
        if quarantine is not None:
            q = write_quarantine(report, quarantine, overwrite)
            console.print(f"quarantine: {q.clean} clean + {q.rejected} rejected = {q.clean + q.rejected} rows → "
                          f"{escape(str(q.folder))}/ (clean.jsonl, rejected.jsonl, scan.json)", highlight=False)
        elif report.findings and not as_json:
            console.print(f"per-row list: tunelab scan {escape(str(data))} --json; keep only the clean rows: "
                          "--quarantine OUT", highlight=False)
