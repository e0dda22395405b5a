"""``tunelab redteam MODEL_OR_URL [--compare OTHER] [--categories ...] [--json OUT] [--html OUT]
[--guardrails on|off|both] [--max-new-tokens N] [--canary STRING] [--canary-file PATH]``."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def _split(values: list[str]) -> tuple[str, ...]:
    """Repeatable flags that also accept commas: ``--categories a,b --categories c``."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


def register(app: typer.Typer) -> None:
    @app.command("redteam")
    def redteam_cmd(
        target: str = typer.Argument(..., help="Model name, model folder, run folder, or an OpenAI-compatible URL."),
        compare: str | None = typer.Option(None, "--compare", help="A second model or URL, reported side by side."),
        categories: list[str] = typer.Option([], "--categories", help="Only these categories (comma-separated)."),
        json_out: Path | None = typer.Option(None, "--json", help="Write the full report as JSON here."),
        html_out: Path | None = typer.Option(None, "--html", help="Write a self-contained HTML report here."),
        guardrails: str = typer.Option("both", "--guardrails", help="off | on | both: attempts without/with the "
                                       "serve guardrail chain."),
        guardrail: list[str] = typer.Option([], "--guardrail", help="Guardrail NAME[=ACTION] for --guardrails on "
                                            "(repeatable; default: all built-in checks)."),
        guardrails_config: str | None = typer.Option(None, "--guardrails-config", help="Guardrails YAML file."),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Longest answer in tokens."),
        canary: list[str] = typer.Option([], "--canary", help="A canary planted in the training data (repeatable)."),
        canary_file: str | None = typer.Option(None, "--canary-file", help="Canaries, one per line or JSONL "
                                               "{canary, context}."),
        max_per_category: int | None = typer.Option(None, "--max-per-category", min=1, help="At most N probes "
                                                    "per category (a quick run)."),
        benign: str = typer.Option("full", "--benign", help="Guardrail false blocks on the benign prompt set: full "
                                   "(inputs and answers) | input (no generation) | off."),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Local models: prompts per forward pass."),
        device: str = typer.Option("auto", "--device", help="Local models: auto | cpu | cuda."),
        model_id: str | None = typer.Option(None, "--model-id", help="URL targets: the model to ask (default: the "
                                            "first of /v1/models)."),
        api_key: str | None = typer.Option(None, "--api-key", help="URL targets: bearer key (or env "
                                           "TUNELAB_API_KEY)."),
    ):
        """Red-team a model: injection, leakage, jailbreak, obfuscation, harmful-request and canary probes."""
        from tunelab.security.redteam import RedteamOptions, plan_attempts, run_redteam
        from tunelab.security.redteam_report import terminal_table, write_reports
        from tunelab.security.redteam_targets import make_target
        from tunelab.utils.log import console

        options = RedteamOptions(
            categories=_split(categories), guardrails=guardrails, guardrail_specs=_split(guardrail) or ("all",),
            guardrails_config=guardrails_config, max_new_tokens=max_new_tokens, canaries=tuple(canary),
            canary_file=canary_file, max_per_category=max_per_category, benign=benign)
        attempts, _ = plan_attempts(options)  # a bad flag fails before any model loads
        key = api_key or os.environ.get("TUNELAB_API_KEY") or None
        targets = [make_target(t, device=device, batch_size=batch_size, model=model_id, api_key=key)
                   for t in [target, compare] if t]
        console.print(f"red-teaming {' and '.join(t.name for t in targets)}: {len(attempts)} attempts, "
                      f"guardrails {guardrails}, greedy, up to {max_new_tokens} new tokens")
        runs, settings = run_redteam(targets, options)
        from tunelab.security.redteam_calibration import load_stats

        stats = load_stats()
        typer.echo(terminal_table(runs, stats))
        write_reports(runs, stats, settings, json_out=json_out, html_out=html_out)
        for path in (json_out, html_out):
            if path is not None:
                console.print(f"wrote {path}")
