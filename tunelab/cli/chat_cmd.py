"""``tunelab chat TARGET [--system S] [--prompt P] [--adapter PATH] [--max-new-tokens N] [--temperature T]``."""

from __future__ import annotations

import sys

import typer

from tunelab.models.safe_load import CLI_HELP


def register(app: typer.Typer) -> None:
    @app.command("chat")
    def chat_cmd(
        target: str = typer.Argument(..., help="Run folder (runs/NAME), model name (tiny, smollm2) or model folder."),
        system: str | None = typer.Option(None, "--system", help="System prompt."),
        prompt: str | None = typer.Option(None, "--prompt", help="Ask once, print the answer on stdout, exit."),
        adapter: str | None = typer.Option(None, "--adapter", help="Chat with this peft adapter on top of TARGET."),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Longest answer in tokens."),
        temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="0 = greedy."),
        top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass."),
        seed: int | None = typer.Option(None, "--seed", help="Seed for reproducible sampling."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help=CLI_HELP),
    ):
        """Chat with a model or run: streams tokens; /reset, /system TEXT, /exit."""
        from tunelab.infer import SamplingParams, load_engine
        from tunelab.infer.chat import ChatSession, run_command
        from tunelab.models.safe_load import pickle_allowed
        from tunelab.utils.log import console

        with pickle_allowed(allow_pickle):
            engine = load_engine(target, {"adapter": adapter} if adapter else None, device=device)
        model_id = "adapter" if adapter else engine.model_ids()[0]
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p or 1.0, seed=seed)
        session = ChatSession(engine, model_id, params, system=system)

        def answer(text: str) -> None:
            stream = session.send(text)
            for delta in stream:
                sys.stdout.write(delta)
                sys.stdout.flush()
            sys.stdout.write("\n")
            t = stream.result.timings
            console.print(f"[dim]{t.new_tokens} tokens, {t.tokens_per_second:.1f} tok/s, first token "
                          f"{t.time_to_first_token * 1000:.0f} ms, {t.cached_prompt_tokens}/{t.prompt_tokens} "
                          "prompt tokens from the context cache[/dim]")

        if prompt is not None:
            answer(prompt)
            return
        console.print(f"chatting with [bold]{model_id}[/bold]; /reset, /system TEXT, /exit")
        while True:
            try:
                line = input("> ")
            except EOFError:
                return
            if not line.strip():
                continue
            outcome = run_command(session, line.strip())
            if outcome is None:
                answer(line)
                continue
            console.print(f"[dim]{outcome.message}[/dim]")
            if outcome.quit:
                return
