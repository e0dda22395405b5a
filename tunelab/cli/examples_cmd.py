"""``tunelab examples list`` and ``tunelab examples copy NAME DIR``: the bundled configs from any install.

As torchtune's ``tune ls`` / ``tune cp``: a pip-installed tunelab has no checkout to read
``examples/`` from, so the configs (and the data they train on) are copied out of the package.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    examples_app = typer.Typer(help="List and copy the bundled example configs.", no_args_is_help=True)

    @examples_app.command("list")
    def list_cmd():
        """Each example config with its one-line summary (to stdout, one per line)."""
        from tunelab.presets.bundled_examples import list_examples

        examples = list_examples()
        width = max(len(e.name) for e in examples)
        for example in examples:
            typer.echo(f"{example.name:<{width}}  {example.description}")

    @examples_app.command("copy")
    def copy_cmd(
        name: str = typer.Argument(..., help="Example name from `tunelab examples list` (e.g. sft-lora)."),
        out: Path = typer.Argument(..., help="Folder to copy into (created if needed; other files are kept)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace files of the same name."),
    ):
        """Copy NAME.yaml and its data files into DIR, the config's data paths pointing at DIR/data/."""
        from tunelab.presets.bundled_examples import copied_files, get_example
        from tunelab.utils.fsio import write_files
        from tunelab.utils.log import console

        example = get_example(name)
        files = copied_files(example, out)
        written = write_files(files, overwrite)
        for path in files:
            console.print(f"{'wrote' if path in written else 'kept (identical)'} {path}", highlight=False)
        console.print(f"next: tunelab {example.command} {out / f'{example.name}.yaml'}", highlight=False)

    app.add_typer(examples_app, name="examples")
