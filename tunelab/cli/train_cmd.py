"""``tunelab train CONFIG [key=value ...] [--resume] [--force]``."""

from __future__ import annotations

from pathlib import Path

import typer

from tunelab.models.safe_load import CLI_HELP


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def train_cmd(
        ctx: typer.Context,
        config: Path = typer.Argument(..., help="YAML config (examples/*.yaml) or a run's config.yaml."),
        resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint."),
        force: bool = typer.Option(False, "--force", help="Train even if the memory planner says it will not fit."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help=CLI_HELP),
    ):
        """Fine-tune or align a model. Extra arguments are overrides: training.max_steps=50 adapter.r=8."""
        from tunelab.config import load_config
        from tunelab.models.safe_load import pickle_allowed
        from tunelab.security.scan.preflight import print_preflight
        from tunelab.train.loop import train
        from tunelab.train.report import print_result

        cfg = load_config(config, list(ctx.args))
        print_preflight(cfg.data.path, cfg.data.format, cfg.data.columns)
        with pickle_allowed(allow_pickle):
            print_result(train(cfg, resume=resume, force=force))
