"""``--format hf`` (a merged Hugging Face folder) and ``--format adapter`` (the peft adapter folder).

The merge itself (adapter folded into the base, generation config with every turn-ending id) is
:mod:`tunelab.models.merge`, shared with :mod:`tunelab.models.resolve`; transformers and vLLM
read the result as a standard ``config.json`` + safetensors folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.config import RunConfig
from tunelab.errors import CheckpointError, ConfigError
from tunelab.models.merge import (
    NOT_MERGEABLE,
    MergedRun,
    eos_token_ids,
    load_merged,
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


def refuse_unmergeable(config: RunConfig, run_dir: Path, fmt: str) -> None:
    """Raise a :class:`ConfigError` naming the formats that do work for adapters with no weights to merge.

    Every fix offered (``--format adapter``, chat/serve unmerged) works for these adapter types, so
    the message never sends the user back here.
    """
    kind = config.adapter.type
    if kind in NOT_MERGEABLE:
        raise ConfigError(
            f"cannot export {run_dir} as --format {fmt}: adapter.type={kind} cannot be merged into the base "
            f"({NOT_MERGEABLE[kind]}; there is no weight delta to fold in).\n"
            f"  fix: `tunelab export {run_dir} --format adapter` (the peft adapter folder with its tokenizer and "
            f"chat template, loaded with PeftModel.from_pretrained), or use it unmerged with "
            f"`tunelab chat {run_dir}` / `tunelab serve {run_dir}`"
        )


def load_for_export(run_dir: Path, fmt: str) -> MergedRun:
    """The run merged in fp32 for a merged format (gguf, bnb), refused first with the export's own advice."""
    refuse_unmergeable(run_config(run_dir), run_dir, fmt)
    return load_merged(run_dir)


def export_hf(run_dir: Path, out: Path, dtype: str = "auto") -> ExportResult:
    """``--format hf``: merged (or fully fine-tuned) model as a Hugging Face folder."""
    config = run_config(run_dir)
    if (run_dir / "model").is_dir():
        return _copy_full(run_dir, out)
    refuse_unmergeable(config, run_dir, "hf")
    merged, files = merge_to_folder(run_dir, out, dtype)
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
