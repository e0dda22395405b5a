"""``tunelab train CONFIG [key=value ...] [--resume] [--force] [--nproc N [--accelerate-config FILE]]``."""

from __future__ import annotations

from pathlib import Path

import typer

from tunelab.models.safe_load import CLI_HELP


def _check_before_launch(cfg, resume: bool, nproc: int) -> None:
    """What the processes would each refuse, refused once here (one message, no launcher report)."""
    from tunelab.methods import get_method
    from tunelab.train import distributed
    from tunelab.train.loop import refuse_started_run

    distributed.require_support(cfg.method, get_method(cfg.method).multi_process, distributed.Ranks(0, nproc))
    if cfg.name is not None:
        refuse_started_run(cfg.run_dir(), resume)


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def train_cmd(
        ctx: typer.Context,
        config: Path = typer.Argument(..., help="YAML config (examples/*.yaml) or a run's config.yaml."),
        resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint."),
        force: bool = typer.Option(False, "--force", help="Train even if the memory planner says it will not fit."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help=CLI_HELP),
        nproc: int = typer.Option(
            1, "--nproc", help="Train in N local processes (DDP: gloo on CPU, nccl on GPUs); global batch x N."
        ),
        accelerate_config: Path | None = typer.Option(
            None, "--accelerate-config", help="With --nproc: accelerate config (FSDP, DeepSpeed: examples/accelerate/)."
        ),
    ):
        """Fine-tune or align a model. Extra arguments are overrides: training.max_steps=50 adapter.r=8."""
        from tunelab.config import load_config
        from tunelab.models.load import default_device
        from tunelab.models.safe_load import pickle_allowed
        from tunelab.security.scan.preflight import print_preflight
        from tunelab.train import distributed
        from tunelab.train.loop import train
        from tunelab.train.report import print_result

        cfg = load_config(config, list(ctx.args))
        if nproc > 1 or accelerate_config is not None:  # validated above; each process loads it again
            _check_before_launch(cfg, resume, nproc)
            print_preflight(cfg.data.path, cfg.data.format, cfg.data.columns)
            flags = [f for f, on in (("--resume", resume), ("--force", force), ("--allow-pickle", allow_pickle)) if on]
            argv = ["train", str(config), *ctx.args, *flags]
            device = default_device(cfg.training.device)
            code = distributed.launch(nproc, argv, device=device, accelerate_config=accelerate_config)
            if code:
                raise typer.Exit(code)
            return
        if distributed.prints_preflight():
            print_preflight(cfg.data.path, cfg.data.format, cfg.data.columns)
        with pickle_allowed(allow_pickle):
            result = train(cfg, resume=resume, force=force)
        if distributed.current().main:
            print_result(result)
        distributed.finish()
