"""The example configs and their data, shipped inside the package (``tunelab/presets/examples``).

They used to be reachable only from a source checkout, so ``tunelab quickstart`` failed after a
plain ``pip install``. As package data they are found in a wheel, an editable install and a
checkout alike (the checkout's top-level ``examples/`` links here, so paths in the docs work).
``tunelab examples copy`` writes a config with its data files into a folder of the user's and
points the config's data paths there, so the copy trains from any working directory.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import ConfigError
from tunelab.presets import preset_path

#: How the configs name their data files: relative to the checkout root (``examples/data/x.jsonl``).
DATA_REF = re.compile(r"examples/data/([\w.-]+)")


@dataclass(frozen=True)
class Example:
    name: str
    path: Path
    description: str

    @property
    def command(self) -> str:
        """The tunelab command that runs it: ``prune`` for a prune config (a top-level ``prune:``), else ``train``."""
        import yaml

        loaded = yaml.safe_load(self.path.read_text())
        return "prune" if isinstance(loaded, dict) and "prune" in loaded else "train"

    def data_files(self) -> list[str]:
        """Names of the files under ``examples/data/`` the config refers to."""
        return sorted(set(DATA_REF.findall(self.path.read_text())))


def examples_root() -> Path:
    """Folder of the bundled examples; a clear error when the install lacks them."""
    root = preset_path("examples")
    if not (root / "quickstart.yaml").is_file():
        raise ConfigError(
            f"the bundled examples are missing from this tunelab install ({root}).\n"
            "  fix: reinstall tunelab (`pip install --force-reinstall tunelab`, or `make setup` in a checkout)"
        )
    return root


def _description(path: Path) -> str:
    """The config's first comment line (each example starts with a one-line summary)."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def list_examples() -> list[Example]:
    return [Example(p.stem, p, _description(p)) for p in sorted(examples_root().glob("*.yaml"))]


def get_example(name: str) -> Example:
    """The example called ``name`` (``sft-lora`` or ``sft-lora.yaml``)."""
    examples = {e.name: e for e in list_examples()}
    key = name.removesuffix(".yaml")
    if key not in examples:
        close = difflib.get_close_matches(key, examples, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(
            f"no example called {name!r}.\n  fix: {hint}choose one of {', '.join(examples)} (`tunelab examples list`)"
        )
    return examples[key]


def copied_files(example: Example, out: Path) -> dict[Path, bytes]:
    """What ``tunelab examples copy`` writes: ``out/NAME.yaml`` and ``out/data/*``, config paths rewritten.

    Data paths become absolute (``out/data/x.jsonl``) so ``tunelab train out/NAME.yaml`` works from
    any folder; other ``examples/`` mentions in the comments point at ``out`` as given.
    """
    data = out.resolve() / "data"
    text = DATA_REF.sub(lambda m: (data / m.group(1)).as_posix(), example.path.read_text())
    text = text.replace("examples/", f"{out.as_posix().rstrip('/')}/")
    files = {out / f"{example.name}.yaml": text.encode()}
    for name in example.data_files():
        files[out / "data" / name] = (example.path.parent / "data" / name).read_bytes()
    return files
