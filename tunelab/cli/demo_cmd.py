"""``tunelab demo RUN_OR_MODEL [--compare OTHER] [--port N] [--host H] [--share on|off]``."""

from __future__ import annotations

import typer

from tunelab.models.safe_load import CLI_HELP


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        target: str = typer.Argument(..., help="Run folder (runs/NAME), model name, model folder or .gguf file."),
        compare: str | None = typer.Option(None, "--compare", help="A second model or run, side by side."),
        port: int = typer.Option(7860, "--port", min=0, max=65535, help="Port (0 = a free one)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; 0.0.0.0 shows it to your network."),
        share: str = typer.Option("off", "--share", help="on: a public gradio.live link (needs the internet)."),
        system: str = typer.Option("", "--system", help="Initial system prompt."),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Initial longest answer."),
        temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="Initial temperature (0 = greedy)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help=CLI_HELP),
    ):
        """A Gradio chat app on tunelab's engine (streaming, system prompt, sampling; --compare: two models)."""
        from tunelab.errors import ConfigError
        from tunelab.models.safe_load import pickle_allowed
        from tunelab.utils.log import console

        if share not in ("on", "off"):
            raise ConfigError(f"--share {share}: unknown\n  fix: use --share off (default) or --share on")
        try:
            import gradio  # noqa: F401  (only to fail early with the install hint)
        except ImportError:
            raise ConfigError("tunelab demo needs Gradio\n  fix: pip install 'tunelab[demo]'") from None
        from tunelab.evaluate.demo import build_app, open_demo_model

        with pickle_allowed(allow_pickle):
            models = [open_demo_model(spec, device=device) for spec in [target, *([compare] if compare else [])]]
        app = build_app(models, system=system, temperature=temperature, max_new_tokens=max_new_tokens)
        console.print(
            f"demo of {' vs '.join(m.label for m in models)} on http://{host}:{port or '(free port)'}; Ctrl+C stops it"
        )
        app.queue().launch(server_name=host, server_port=port or None, share=share == "on", quiet=True)
