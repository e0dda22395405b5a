"""Package layering: lower layers never import higher ones (issue 9, criterion 15).

``tunelab.models`` (resolve, load, merge) is what export, serve and train build on; an import
the other way (models → export) made a cycle merge → load → resolve → merge that broke as
soon as either side imported the other at module level. Every import is checked, including
the ones inside functions, by parsing the source rather than importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tunelab

PACKAGE = Path(tunelab.__file__).parent

#: package → packages it must not import (directly, at any depth of the source).
FORBIDDEN = {
    "models": ("tunelab.export", "tunelab.serve", "tunelab.cli", "tunelab.train"),
    "data": ("tunelab.export", "tunelab.models", "tunelab.serve", "tunelab.cli"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``import x`` / ``from x import y`` in a file (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found += [(node.lineno, module)] + [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return found


def test_imported_modules_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    source = PACKAGE / "models" / "_layering_probe.py"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: (
        "import os\ndef f():\n    from tunelab.export import merge\n    from . import load\n"))
    found = imported_modules(source)
    assert (1, "os") in found and (3, "tunelab.export") in found and (4, "tunelab.models.load") in found


def test_lower_packages_do_not_import_higher_ones():
    offenders = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            for line, module in imported_modules(path):
                if module.startswith(forbidden):
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert offenders == []
