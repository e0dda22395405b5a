"""``--format space``: a folder ready to push to a Hugging Face Space (Gradio SDK).

The folder holds ``README.md`` with the Spaces YAML header (title, sdk: gradio, sdk_version,
app_file: app.py; https://huggingface.co/docs/hub/spaces-config-reference), ``app.py`` (a
streaming chat app with a system prompt and sampling controls on plain transformers, so the
Space does not need tunelab), ``requirements.txt`` (the transformers and torch it was tested
with; Gradio itself comes from ``sdk_version``), ``space.json`` (title, default system prompt)
and ``model/``, the merged model of ``--format hf``. ``.gitattributes`` sends the weights
through Git LFS, which the Hub requires for large files.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from tunelab.export.merge import ExportResult, export_hf
from tunelab.presets import preset_path

GRADIO_FALLBACK = "6.31.0"  # sdk_version when Gradio is not installed here (the version tests ran)
LFS = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.gguf filter=lfs diff=lfs merge=lfs -text\n"


def _version(package: str, fallback: str | None = None) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return fallback


def readme(title: str, description: str) -> str:
    """The Space's README: the YAML header the Hub reads, then a short description."""
    header = {
        "title": title[:30],  # the Hub shows (and validates) a short title
        "emoji": "💬",
        "colorFrom": "indigo",
        "colorTo": "blue",
        "sdk": "gradio",
        "sdk_version": _version("gradio", GRADIO_FALLBACK),
        "app_file": "app.py",
        "pinned": False,
    }
    lines = [f"{k}: {json.dumps(v, ensure_ascii=False) if isinstance(v, str | bool) else v}" for k, v in header.items()]
    return "---\n" + "\n".join(lines) + f"\n---\n\n# {title}\n\n{description}\n"


def requirements() -> str:
    """Pinned to what this export was made (and the app tested) with."""
    pins = [f"transformers=={_version('transformers')}", f"torch>={_version('torch', '2.6').split('+')[0]}"]
    return "\n".join([*pins, "safetensors", "accelerate"]) + "\n"


def export_space(run_dir: Path, out: Path, dtype: str = "auto", system: str = "") -> ExportResult:
    """Write the Space folder for ``run_dir`` into ``out`` (see the module docstring)."""
    merged = export_hf(run_dir, out / "model", dtype)
    description = (
        f"A chat demo of `{run_dir.name}`, fine-tuned with tunelab. The model is in `model/` "
        "(merged safetensors); `app.py` streams its answers with Gradio."
    )
    settings = {
        "title": run_dir.name,
        "description": description,
        "system": system,
        "temperature": 0.7,
        "max_new_tokens": 256,
    }
    (out / "app.py").write_text(preset_path("space/app.py").read_text())
    (out / "space.json").write_text(json.dumps(settings, indent=1) + "\n")
    (out / "README.md").write_text(readme(run_dir.name, description))
    (out / "requirements.txt").write_text(requirements())
    (out / ".gitattributes").write_text(LFS)
    files = ["README.md", "app.py", "requirements.txt", "space.json", ".gitattributes", "model/"]
    return ExportResult("space", out, files, merged.eos_token_ids, [*merged.notes, "push it: see README.md"])
