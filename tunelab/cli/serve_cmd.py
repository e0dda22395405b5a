"""``tunelab serve MODEL_OR_RUN [--engine tunelab|llama.cpp|vllm] [--adapter NAME=PATH ...] [--host] [--port] ...``."""

from __future__ import annotations

import os

import typer

from tunelab.errors import ConfigError
from tunelab.models.safe_load import CLI_HELP


def parse_adapters(items: list[str]) -> dict[str, str]:
    """``NAME=PATH`` flags → ``{NAME: PATH}``; a malformed one names the flag and the fix."""
    adapters: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter {item!r}: expected NAME=PATH, e.g. --adapter support=runs/support")
        adapters[name] = path
    return adapters


def list_guardrails(value: bool) -> None:
    """``--list-guardrails``: name, stage, default action and description of each, then exit."""
    if not value:
        return
    from tunelab.serve.guardrails import guardrail_rows

    rows = [("name", "stage", "default", "description"), *guardrail_rows()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join(f"{cell:<{w}}" for cell, w in zip(row[:3], widths, strict=True)) + f"  {row[3]}")
    raise typer.Exit()


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        target: str = typer.Argument(..., help="Run folder (runs/NAME), model name (tiny, smollm2) or model folder."),
        adapter: list[str] = typer.Option([], "--adapter", help="Serve another adapter as NAME=PATH (repeatable)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 exposes it)."),
        port: int = typer.Option(8000, "--port", help="TCP port."),
        api_key: str | None = typer.Option(None, "--api-key", help="Require this key (or env TUNELAB_API_KEY)."),
        max_queue: int = typer.Option(64, "--max-queue", min=1, help="Requests allowed to wait; more get 429."),
        max_tokens_limit: int = typer.Option(4096, "--max-tokens-limit", min=1, help="Largest max_tokens accepted."),
        max_prompts: int = typer.Option(16, "--max-prompts", min=1, help="Most prompts in one completions request."),
        max_request_tokens: int = typer.Option(
            16_384, "--max-request-tokens", min=1, help="Most tokens one request may ask for (prompts x max_tokens)."
        ),
        max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", min=1, help="Larger bodies get 413."),
        insecure_no_auth: bool = typer.Option(
            False, "--insecure-no-auth", help="Allow a non-loopback --host without --api-key (anyone can use it)."
        ),
        speculation: str = typer.Option("none", "--speculation", help="none | prompt_lookup | draft."),
        draft: str | None = typer.Option(None, "--draft", help="Draft model (same tokenizer) for --speculation draft."),
        guardrail: list[str] = typer.Option(
            [], "--guardrail",
            help="Guardrail NAME or NAME=block|flag|redact (repeatable; 'all': every built-in check).",
        ),
        guardrails_config: str | None = typer.Option(
            None, "--guardrails-config", help="YAML file: guardrail name -> action or options (see docs/security.md)."
        ),
        _list: bool = typer.Option(False, "--list-guardrails", is_eager=True, callback=list_guardrails,
                                   help="List the guardrails (stage, default action) and exit."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        engine: str = typer.Option(
            "tunelab", "--engine",
            help="tunelab (the run as trained, adapters unmerged) | llama.cpp (the run's GGUF export; fast on CPU) "
                 "| vllm (the merged export on a CUDA GPU).",
        ),
        quant: str = typer.Option("f16", "--quant", help="--engine llama.cpp: the GGUF quantization to serve "
                                  "(f16 | q8_0 | q4_0 | f32), exported into RUN/export/gguf-QUANT when absent."),
        max_context: int = typer.Option(0, "--max-context", min=0, help="--engine llama.cpp/vllm: cap on the "
                                        "context allocated up front (0: the model's, at most 8192 for llama.cpp)."),
        static_cache: bool = typer.Option(False, "--static-cache", help="--engine tunelab: decode into a "
                                          "preallocated StaticCache (no context cache)."),
        compile_step: bool = typer.Option(False, "--compile", help="--engine tunelab: torch.compile the decode step "
                                          "(implies --static-cache; see docs/serving.md for when it pays)."),
        lean: bool = typer.Option(False, "--lean", help="--engine tunelab: decode a plain Llama-family model on "
                                  "the CPU with tunelab's lean step (fused weights; no context cache; see "
                                  "docs/serving.md)."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help=CLI_HELP),
    ):
        """Serve a model or run over an OpenAI-compatible API (chat, completions, SSE streaming)."""
        from tunelab.infer import Speculation
        from tunelab.infer.engines import ENGINES, EngineOptions, load_backend
        from tunelab.models.safe_load import pickle_allowed
        from tunelab.security.guardrails import chain_from_cli
        from tunelab.serve import ServerSettings, create_app, run_server
        from tunelab.serve.bind import check_bind, is_loopback
        from tunelab.utils.log import console

        ENGINES.canonical(engine)  # an unknown engine fails before anything loads
        key = api_key or os.environ.get("TUNELAB_API_KEY") or None
        check_bind(host, key, insecure_no_auth)  # before the model loads: fail in a second, not a minute
        guards = chain_from_cli(guardrail, guardrails_config)
        spec = Speculation(kind=speculation)  # type: ignore[arg-type]
        adapters = parse_adapters(adapter)
        settings = ServerSettings(api_key=key, max_queue=max_queue, max_tokens_limit=max_tokens_limit,
                                  max_body_bytes=max_body_bytes, max_prompts=max_prompts,
                                  max_request_tokens=max_request_tokens)
        with pickle_allowed(allow_pickle):
            options = EngineOptions(adapters=adapters, device=device, draft=draft, speculation=spec, quant=quant,
                                    max_context=max_context, static_cache=static_cache, compile=compile_step,
                                    lean=lean)
            backend = load_backend(engine, target, options)
        if key is None and not is_loopback(host):
            console.print(f"[yellow]warning:[/yellow] --insecure-no-auth: listening on {host} without --api-key: "
                          "anyone who can reach it can use the model")
        console.print(f"serving {', '.join(backend.model_ids())} on http://{host}:{port}/v1 "
                      f"with {ENGINES.canonical(engine)} ({'API key required' if key else 'no API key'})")
        if guards:
            console.print("guardrails: " + ", ".join(f"{g['name']}={g['action']}" for g in guards.describe()))
        run_server(create_app(backend, settings, guards), host, port, log_level="warning")
