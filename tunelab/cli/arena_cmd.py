"""``tunelab arena run | serve | export | leaderboard``: compare models pairwise, by a judge or by people."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.core import TyperCommand

from tunelab.errors import ConfigError

JUDGE_HELP = "reward:RUN (a reward model run), llm:MODEL_OR_URL (pairwise, both orders) or human:VOTES.sqlite."


class ListOptionCommand(TyperCommand):
    """Lets ``--models A B C`` mean ``--models A --models B --models C`` (click options take one value each)."""

    list_options = ("--models",)

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        out: list[str] = []
        flag, right_after_flag = None, False
        for arg in args:
            if arg.startswith("-"):
                flag, right_after_flag = (arg if arg in self.list_options else None), True
            elif flag is not None and not right_after_flag:
                out.append(flag)  # a further value of the list option: repeat the flag before it
            else:
                right_after_flag = False
            out.append(arg)
        return super().parse_args(ctx, out)


def register(app: typer.Typer) -> None:
    arena = typer.Typer(
        help="Rank models by pairwise judgments: Elo, Bradley–Terry, a human-vote page.", no_args_is_help=True
    )

    @arena.command("run", cls=ListOptionCommand)
    def run_cmd(
        models: list[str] = typer.Option(
            ...,
            "--models",
            help="Two or more models: names, folders, runs, .gguf, URLs (repeat the flag or list them after it).",
        ),
        prompts: Path = typer.Option(
            ..., "--prompts", help="Prompts: .txt (one per line) or .jsonl rows with prompt (optional id, system)."
        ),
        judge: str = typer.Option(..., "--judge", help=JUDGE_HELP),
        out: Path = typer.Option(..., "--out", help="Output folder (answers are reused from it on a re-run)."),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Longest answer, in tokens."),
        temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy answers."),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Prompts per forward pass."),
        bootstrap: int = typer.Option(1000, "--bootstrap", min=10, help="Bootstrap rounds of the intervals."),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap (and of sampling)."),
        anchor: str | None = typer.Option(None, "--anchor", help="Model rated 1000 (default: the mean is 1000)."),
    ):
        """Answers from every model, every pair judged, a leaderboard with 95% intervals."""
        from tunelab.evaluate.arena.run import run_arena
        from tunelab.infer.types import SamplingParams
        from tunelab.train.progress import track_items

        params = SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, seed=seed if temperature > 0 else None
        )
        result = run_arena(
            models,
            prompts,
            judge,
            out,
            params=params,
            batch_size=batch_size,
            rounds=bootstrap,
            seed=seed,
            anchor=anchor,
            progress=track_items,
        )
        typer.echo(result.summary(), nl=False)
        typer.echo(
            f"wrote {out}/: answers.jsonl judgments.jsonl leaderboard.txt leaderboard.json winrate.csv ratings.png"
        )

    @arena.command("serve")
    def serve_cmd(
        folder: Path | None = typer.Argument(None, help="Arena folder with answers.jsonl (from `arena run`)."),
        db: Path = typer.Option(Path("votes.sqlite"), "--db", help="SQLite file of the votes (created if missing)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 exposes it)."),
        port: int = typer.Option(7860, "--port", help="TCP port."),
    ):
        """A local page: a prompt, two anonymous answers, vote with buttons or keys; a leaderboard page."""
        from tunelab.evaluate.arena.web import serve_app
        from tunelab.serve.run import run_server
        from tunelab.utils.log import console

        if folder is not None and not (folder / "answers.jsonl").is_file():
            raise ConfigError(f"{folder}: no answers.jsonl\n  fix: run `tunelab arena run ... --out {folder}` first")
        app = serve_app(folder, db, host=host, port=port)
        console.print(f"vote page on http://{host}:{port}/ (leaderboard: /leaderboard), votes in {db}")
        run_server(app, host, port)

    @arena.command("export")
    def export_cmd(
        out: Path = typer.Argument(..., help="Output .jsonl file."),
        db: Path = typer.Option(..., "--db", help="SQLite file of the votes."),
        fmt: str = typer.Option(
            "preference", "--format", help="preference: prompt/chosen/rejected rows for method: dpo."
        ),
    ):
        """Write the human votes as training data (prompt / chosen / rejected for DPO)."""
        from tunelab.evaluate.arena.export import FORMATS, preference_rows, write_jsonl
        from tunelab.evaluate.arena.store import VoteStore

        if fmt not in FORMATS:
            raise ConfigError(f"--format {fmt}: unknown\n  fix: use one of {', '.join(FORMATS)}")
        if not db.is_file():
            raise ConfigError(f"--db {db}: no such file\n  fix: collect votes with `tunelab arena serve DIR --db {db}`")
        rows, summary = preference_rows(VoteStore(db).votes())
        write_jsonl(rows, out)
        typer.echo(
            f"wrote {summary.rows} preference rows to {out} from {summary.votes} votes "
            f"({summary.ties} ties or both-bad, {summary.netted_out} pairs whose votes cancelled, "
            f"{summary.same_answer} with identical answers left out)"
        )

    @arena.command("leaderboard")
    def leaderboard_cmd(
        db: Path = typer.Option(..., "--db", help="SQLite file of the votes."),
        bootstrap: int = typer.Option(1000, "--bootstrap", min=10, help="Bootstrap rounds of the intervals."),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    ):
        """Ratings of every stored human vote (no answers folder needed)."""
        from tunelab.evaluate.arena.report import leaderboard_table
        from tunelab.evaluate.arena.run import rate_votes

        if not db.is_file():
            raise ConfigError(f"--db {db}: no such file\n  fix: collect votes with `tunelab arena serve DIR --db {db}`")
        ratings, report = rate_votes(db, rounds=bootstrap, seed=seed)
        typer.echo(leaderboard_table(ratings) + report.line())

    app.add_typer(arena, name="arena")
