"""Fold a run's adapter into its base and write the result as a plain Hugging Face folder.

Two callers need this: the merged export formats (hf, gguf, bnb) and :mod:`tunelab.models.resolve`,
which turns a finished run into a base model for the next stage (SFT → DPO / reward / PPO). It
lives here, beside loading, so that the models package never imports the export package (the
export formats build on models, not the other way round).

LoRA/DoRA deltas are folded into the base weights with peft's ``merge_and_unload``
(W' = W + (alpha/r)·B·A; for DoRA the magnitude-scaled direction, Liu et al. 2024,
arXiv:2402.09353), so the folder needs neither peft nor custom code. Prompt tuning, prefix
tuning and LLaMA-Adapter add virtual tokens or gated attention prompts instead of weight deltas;
there is nothing to fold into W, so those runs are refused with the alternatives.

The generation config lists every token that ends a turn (the tokenizer's EOS and the chat
template's turn terminator, e.g. ``<|im_end|>``), so the merged model stops where the trained
one stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.config import RunConfig
from tunelab.data.chat_layout import TemplateError, analyse_template
from tunelab.errors import CheckpointError, ConfigError, ModelError

#: Adapter types that change activations, not weights: they cannot be merged.
NOT_MERGEABLE = {
    "prompt_tuning": "prompt tuning learns virtual input tokens",
    "prefix_tuning": "prefix tuning learns key/value prefixes for every layer",
    "llama_adapter": "LLaMA-Adapter adds gated attention over learned prompts",
}


@dataclass
class MergedRun:
    """A run with its adapter folded in: an ordinary transformers model, fp32, on CPU."""

    model: object
    tokenizer: object
    config: RunConfig
    eos_token_ids: list[int]


def run_config(run_dir: Path) -> RunConfig:
    from tunelab.config import load_config

    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (no config.yaml).\n  fix: pass runs/NAME")
    return load_config(run_dir / "config.yaml")


class UnmergeableError(ConfigError):
    """The run's adapter adds virtual tokens or attention prompts: there is no weight delta to merge."""


def check_mergeable(config: RunConfig, run_dir: Path) -> None:
    """Raise :class:`UnmergeableError` for adapter types that have no weights to merge.

    This is the message for a run used as a base model (``model.name=runs/NAME``); exports say
    which export format to use instead. The fixes offered work for these adapter types, so the
    message never sends the user back here.
    """
    kind = config.adapter.type
    if kind in NOT_MERGEABLE:
        raise UnmergeableError(
            f"{run_dir}: adapter.type={kind} cannot be merged into its base ({NOT_MERGEABLE[kind]}; there is "
            "no weight delta to fold in), so it cannot be loaded as a plain model.\n"
            f"  fix: use it unmerged with `tunelab chat {run_dir}` or `tunelab serve {run_dir}`; to build on it, "
            "train from its base model with a mergeable adapter (lora, dora, qlora, freeze, full)"
        )


def id_list(value) -> list[int]:
    """A token id, a list of ids or None (as configs store EOS) as a list."""
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


def eos_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Every id that ends a turn: generation-config EOS, tokenizer EOS, the template's turn terminator."""
    ids = id_list(getattr(generation_config, "eos_token_id", None))
    ids += id_list(tokenizer.eos_token_id)
    try:
        terminator = analyse_template(tokenizer).turn_terminator()
    except TemplateError:
        terminator = ""
    if terminator:
        encoded = tokenizer(terminator, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.append(int(encoded[0]))
    return list(dict.fromkeys(ids))


def load_merged(run_dir: Path) -> MergedRun:
    """Load ``run_dir`` in fp32 on CPU and merge its adapter (a full fine-tune is returned as is)."""
    from tunelab.models.load import load_run

    config = run_config(run_dir)
    check_mergeable(config, run_dir)
    # A QLoRA base is loaded in NF4 and dequantized (the weights its adapter was trained against),
    # then the delta is added in fp32: re-quantizing after the merge would round the delta away.
    loaded = load_run(run_dir, device="cpu", dtype="fp32", merge=True)
    model = loaded.model
    if hasattr(model, "peft_config"):
        raise ModelError(f"{run_dir}: the adapter could not be merged ({type(model).__name__})")
    model.eval()
    return MergedRun(model, loaded.tokenizer, config, eos_token_ids(loaded.tokenizer, model.generation_config))


def write_generation_config(base, tokenizer, eos_ids: list[int], folder: Path) -> None:
    """Save ``generation_config.json`` (from ``base``, a GenerationConfig or None) with all turn-ending ids."""
    from transformers import GenerationConfig

    config = GenerationConfig(**(base.to_diff_dict() if base is not None else {}))
    config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else list(eos_ids)
    config.bos_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.save_pretrained(folder)


def save_hf_folder(merged: MergedRun, out: Path, dtype: str = "auto") -> list[str]:
    """Write weights (safetensors), config, tokenizer, chat template and generation config to ``out``."""
    import torch

    model = merged.model
    if dtype != "auto":
        model = model.to({"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype])
    for key in ("auto_map", "quantization_config"):
        if hasattr(model.config, key):
            delattr(model.config, key)  # standard config.json: no custom code, no stale quantizer
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    merged.tokenizer.save_pretrained(out)
    write_generation_config(model.generation_config, merged.tokenizer, merged.eos_token_ids, out)
    return sorted(p.name for p in out.iterdir())


def merge_to_folder(run_dir: Path, out: Path, dtype: str = "auto") -> tuple[MergedRun, list[str]]:
    """Merge the run's adapter and write the Hugging Face folder ``out``; returns the run and the files."""
    merged = load_merged(run_dir)
    return merged, save_hf_folder(merged, out, dtype)
