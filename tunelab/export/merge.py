"""``--format hf`` (a merged Hugging Face folder) and ``--format adapter`` (the peft adapter folder).

The merge itself (adapter folded into the base, generation config with every turn-ending id) is
:mod:`tunelab.models.merge`, shared with :mod:`tunelab.models.resolve`; transformers and vLLM
read the result as a standard ``config.json`` + safetensors folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import CheckpointError
from tunelab.models.merge import (
    eos_token_ids,
    merge_to_folder,
    run_config,
    write_generation_config,
)


@dataclass
class ExportResult:
    """What an export wrote: ``path`` is the folder (hf, adapter, bnb) or the file (gguf)."""

    format: str
    path: Path
    files: list[str] = field(default_factory=list)
    eos_token_ids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def export_hf(run_dir: Path, out: Path, dtype: str = "auto") -> ExportResult:
    """``--format hf``: merged (or fully fine-tuned) model as a Hugging Face folder."""
    config = run_config(run_dir)
    if (run_dir / "model").is_dir():
        return _copy_full(run_dir, out)
    merged, files = merge_to_folder(run_dir, out, dtype, "hf")
    return ExportResult("hf", out, files, merged.eos_token_ids, [f"merged {config.adapter.type} adapter into the base"])


def _copy_full(run_dir: Path, out: Path) -> ExportResult:
    from transformers import AutoTokenizer, GenerationConfig

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(run_dir / "model", out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    try:
        generation = GenerationConfig.from_pretrained(out)
    except OSError:
        generation = None
    eos = eos_token_ids(tokenizer, generation)
    write_generation_config(generation, tokenizer, eos, out)
    return ExportResult("hf", out, sorted(p.name for p in out.iterdir()), eos, ["full fine-tune: copied run/model"])


def export_adapter(run_dir: Path, out: Path) -> ExportResult:
    """``--format adapter``: the peft adapter folder, tokenizer and trained chat template (any adapter type)."""
    source = run_dir / "adapter"
    if not source.is_dir():
        raise CheckpointError(f"{run_dir} has no adapter/ folder (a full fine-tune?).\n  fix: use --format hf")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out)
    _write_trained_template(run_dir, out)
    return ExportResult("adapter", out, sorted(p.name for p in out.iterdir()), notes=["load with PeftModel"])


def _write_trained_template(run_dir: Path, out: Path) -> None:
    """Give the copied tokenizer the template the run was trained with (older runs saved the base's)."""
    from transformers import AutoTokenizer

    from tunelab.models.load import use_trained_template

    tokenizer = AutoTokenizer.from_pretrained(out)
    saved = tokenizer.chat_template
    use_trained_template(run_dir, run_config(run_dir), tokenizer)
    if tokenizer.chat_template != saved:
        tokenizer.save_pretrained(out)
