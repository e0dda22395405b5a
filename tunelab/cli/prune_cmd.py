"""``tunelab prune MODEL_OR_RUN|CONFIG.yaml --method depth|width|depth+width|magnitude ... --calib FILE --out DIR``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tunelab.models.safe_load import CLI_HELP

#: flag → config key (a flag given on the command line overrides the YAML).
FLAG_KEYS = {
    "method": "prune.method",
    "drop_layers": "prune.drop_layers",
    "keep": "prune.keep",
    "sparsity": "prune.sparsity",
    "scope": "prune.scope",
    "refit": "prune.refit",
    "calib_rows": "prune.calib_rows",
    "calib": "data.path",
    "validation_split": "data.validation_split",
    "max_length": "data.max_length",
    "recover": "recover.recover",
    "recover_steps": "recover.training.max_steps",
    "recover_minutes": "recover.training.max_minutes",
    "recover_adapter": "recover.adapter.type",
    "learning_rate": "recover.training.learning_rate",
    "out": "out",
}


def overrides(source: str, flags: dict, layers: str | None) -> tuple[Path | None, list[str]]:
    """The YAML to read (if ``source`` is one) and ``key=value`` overrides from the flags given."""
    config = Path(source) if source.endswith((".yaml", ".yml")) else None
    pairs = [] if config is not None else [f"model.name={json.dumps(source)}"]
    pairs += [
        f"{FLAG_KEYS[k]}={json.dumps(str(v)) if isinstance(v, Path) else v}" for k, v in flags.items() if v is not None
    ]
    if layers:
        pairs.append(f"prune.layers=[{layers}]")
    return config, pairs


def _mib(gib: float | None) -> str:
    return "-" if gib is None else f"{gib * 1024:,.1f} MiB"


def print_report(report) -> None:
    from rich.table import Table

    from tunelab.compress.pipeline import PLAN_CONTEXT
    from tunelab.utils.log import console

    base = report.stages[0]
    table = Table(title=f"tunelab prune {report.method}: {report.source}")
    for name in ("stage", "parameters", "vs base", "weights", "memory", "perplexity", "vs base"):
        table.add_column(name, justify="left" if name == "stage" else "right")
    if base.sparsity is not None:
        table.add_column("zeros", justify="right")
    for s in report.stages:
        row = [
            s.name,
            f"{s.params:,}",
            f"{s.params / base.params:.3f}x",
            _mib(s.weights_gib),
            _mib(s.planned_gib),
            f"{s.perplexity:.3f}",
            f"{s.perplexity / base.perplexity:.3f}x",
        ]
        if s.sparsity is not None:
            row.append(f"{s.sparsity:.1%}")
        table.add_row(*row)
    console.print(table)
    console.print(
        f"planned memory: the planner's inference estimate (bf16 weights, one {PLAN_CONTEXT}-token "
        "sequence, fixed runtime overhead included); perplexity: the held-out split of the data",
        highlight=False,
    )
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    if report.recovery:
        r = report.recovery
        console.print(
            f"recovery: {r['method']} ({r['adapter']}), {r['steps']} steps in {r['wall_s']:.0f} s "
            f"→ {report.out}/recovery",
            highlight=False,
        )
    console.print(f"saved {report.model_dir} (a Hugging Face folder: AutoModelForCausalLM loads it)", highlight=False)
    console.print(
        f"next: tunelab export {report.out} --format gguf --verify · tunelab serve {report.out}", highlight=False
    )


def register(app: typer.Typer) -> None:
    @app.command("prune", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def prune_cmd(
        ctx: typer.Context,
        source: str = typer.Argument(..., help="Model name/folder, run folder (merged first), or a prune YAML."),
        method: str = typer.Option(None, "--method", help="depth | width | depth+width | magnitude (default depth)."),
        drop_layers: int = typer.Option(None, "--drop-layers", help="depth: number of layers to drop."),
        layers: str = typer.Option(None, "--layers", help="depth: exact layer indices to drop, e.g. 3,5."),
        keep: float = typer.Option(None, "--keep", help="width: MLP channels kept, fraction or count."),
        sparsity: float = typer.Option(None, "--sparsity", help="magnitude: fraction of weights zeroed."),
        scope: str = typer.Option(None, "--scope", help="magnitude: global | layer."),
        refit: bool = typer.Option(
            None, "--refit/--no-refit", help="width: least-squares refit of each narrowed down_proj (default on)."
        ),
        calib: Path = typer.Option(None, "--calib", help="Data file: calibration + held-out split (any SFT format)."),
        validation_split: float = typer.Option(None, "--validation-split", help="Held-out fraction of --calib."),
        calib_rows: int = typer.Option(None, "--calib-rows", help="Calibration examples used for scoring."),
        max_length: int = typer.Option(None, "--max-length", help="Tokens per example."),
        recover: str = typer.Option(None, "--recover", help="lora | distill | none (default lora)."),
        recover_steps: int = typer.Option(None, "--recover-steps", help="Optimizer steps of the recovery run."),
        recover_minutes: float = typer.Option(
            None, "--recover-minutes", help="Time budget of the recovery run (stops early; the LR decays in time)."
        ),
        recover_adapter: str = typer.Option(
            None, "--recover-adapter", help="lora | full | freeze (all layers, no embeddings): what recovery trains."
        ),
        learning_rate: float = typer.Option(None, "--lr", help="Recovery learning rate."),
        out: Path = typer.Option(None, "--out", help="Output folder (default pruned/<model>-<method>)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out (once done)."),
        as_json: bool = typer.Option(False, "--json", help="Print the report (prune.json) on stdout."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help=CLI_HELP),
    ):
        """Prune a model (depth, width or magnitude), recover it briefly, and save a model folder.

        Prints parameters, planned memory and held-out perplexity before, after pruning and after recovery.
        Extra arguments are config overrides: recover.training.max_steps=20 recover.adapter.r=8.
        """
        from dataclasses import asdict

        from tunelab.compress.config import load_prune_config
        from tunelab.compress.pipeline import prune
        from tunelab.models.safe_load import pickle_allowed
        from tunelab.utils.log import console

        flags = {
            "method": method,
            "drop_layers": drop_layers,
            "keep": keep,
            "sparsity": sparsity,
            "scope": scope,
            "refit": refit,
            "calib": calib,
            "validation_split": validation_split,
            "calib_rows": calib_rows,
            "max_length": max_length,
            "recover": recover,
            "recover_steps": recover_steps,
            "recover_minutes": recover_minutes,
            "recover_adapter": recover_adapter,
            "learning_rate": learning_rate,
            "out": out,
        }
        path, pairs = overrides(source, flags, layers)
        pairs = list(ctx.args) + pairs  # flags win over key=value overrides, which win over the YAML
        config = load_prune_config(path, pairs)
        if config.data.path is None:
            from tunelab.errors import ConfigError

            raise ConfigError(
                "tunelab prune needs data to score and measure on.\n"
                "  fix: pass --calib FILE (e.g. examples/data/quickstart.jsonl) or data.path in the YAML"
            )
        with pickle_allowed(allow_pickle):
            report = prune(config, overwrite=overwrite, log=lambda line: console.print(line, highlight=False))
        if as_json:
            typer.echo(json.dumps(asdict(report), indent=2))
        else:
            print_report(report)
