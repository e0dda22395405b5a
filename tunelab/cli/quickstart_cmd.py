"""``tunelab quickstart``: the main job on the bundled model, with a measured before/after."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("quickstart", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def quickstart_cmd(ctx: typer.Context):
        """QLoRA-fine-tune the bundled SmolLM2-135M-Instruct on a fixed answer format (a few minutes on CPU)
        and show format adherence on held-out prompts before and after. Extra args override the config."""
        from rich.table import Table

        from tunelab.quickstart import run_quickstart
        from tunelab.utils.log import console

        console.print(
            "[bold]tunelab quickstart[/bold]: teach SmolLM2-135M-Instruct to answer as "
            "'Answer: …⏎Confidence: high|medium|low' with QLoRA.\n"
            "1) train (examples/quickstart.yaml)  2) score the base model and the fine-tune on 10 held-out prompts "
            "(the suite examples/eval/quickstart.yaml)"
        )
        res = run_quickstart(list(ctx.args))
        table = Table(title="held-out prompts: does the answer follow 'Answer: …\\nConfidence: …'?")
        table.add_column("prompt #")
        table.add_column("before (base model)")
        table.add_column("after (QLoRA adapter)")
        for i, (b, a) in enumerate(zip(res.before.answers, res.after.answers, strict=True), 1):
            table.add_row(str(i), b.replace("\n", "⏎ "), a.replace("\n", "⏎ "))
        console.print(table)
        console.print(
            f"[bold]format adherence: before {res.before.passed}/{res.before.total}, "
            f"after {res.after.passed}/{res.after.total}[/bold]  "
            f"(training {res.train_wall_s:.0f} s at {res.tokens_per_s:,.0f} tokens/s; total {res.wall_s:.0f} s)"
        )
        from tunelab.evaluate.report import text_report

        typer.echo(f"\nthe same through the quickstart suite (tunelab eval suite {res.suite_run.suite.path}):")
        typer.echo(text_report(res.suite_run))
        console.print(
            f"run folder: {res.run_dir}\nplot:       {res.run_dir / 'loss.png'}\n"
            f"adapter:    {res.run_dir / 'adapter'}\n"
            f"next:       tunelab chat {res.run_dir}"
        )
