"""Where tunelab keeps its cache (converted models, the tiny model)."""

from __future__ import annotations

import os
from pathlib import Path


def tunelab_home() -> Path:
    """``$TUNELAB_HOME`` or ``~/.cache/tunelab``; created on first use."""
    home = Path(os.environ.get("TUNELAB_HOME", Path.home() / ".cache" / "tunelab")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def models_cache() -> Path:
    path = tunelab_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def publish_folder(tmp: Path, final: Path) -> Path:
    """Move a fully written ``tmp`` folder to ``final`` atomically.

    If another process published ``final`` first (two test workers building the same cache
    entry), its copy wins and ``tmp`` is discarded.
    """
    import shutil

    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
