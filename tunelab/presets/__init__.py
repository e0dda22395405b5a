"""Data files shipped with tunelab (model presets, device list, probe library, corpora).

Read them with :func:`preset_path` so they are found inside an installed wheel too.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def preset_path(name: str) -> Path:
    """Path of the preset data file ``name`` (e.g. ``"tiny_corpus.txt"``)."""
    return Path(str(resources.files(__package__).joinpath(name)))
