"""Load what ``tunelab serve`` / ``tunelab chat`` were pointed at into an :class:`Engine`.

A target is a run folder (``runs/NAME`` with ``config.yaml``: base + ``adapter/``, or a full
fine-tune in ``model/``), a model name known to :func:`tunelab.models.resolve.resolve_model`,
or a model folder. Extra adapters (``NAME=PATH``, a peft adapter folder or a run folder) are
loaded beside the first one, unmerged. The served ids are:

* a run: ``NAME`` (its adapter) and, with an adapter, the base model's name (adapters off);
* a model: its name as given;
* each extra adapter: its ``NAME``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from tunelab.errors import ServeError
from tunelab.infer.cache import PrefixCache
from tunelab.infer.engine import Engine
from tunelab.infer.types import Speculation
from tunelab.models.safe_load import check_weights_folder

#: peft types that need per-request inputs besides the prompt (CPT's token type masks, multitask
#: prompt tuning's task ids). Prompt and prefix tuning are served unmerged (tunelab.infer.virtual).
UNSERVABLE_PEFT = {"CPT", "MULTITASK_PROMPT_TUNING"}


def is_run_folder(target: str | Path) -> bool:
    return (Path(target) / "config.yaml").is_file()


def adapter_folder(path: str | Path) -> Path:
    """An adapter folder from a peft folder or a run folder (``runs/NAME/adapter``)."""
    folder = Path(path)
    if is_run_folder(folder) and (folder / "adapter").is_dir():
        folder = folder / "adapter"
    config = folder / "adapter_config.json"
    if not config.is_file():
        raise ServeError(
            f"--adapter {path}: no adapter_config.json there.\n"
            "  fix: point at a peft adapter folder or a run folder with an adapter/ (runs/NAME)"
        )
    peft_type = json.loads(config.read_text()).get("peft_type", "")
    if peft_type in UNSERVABLE_PEFT:
        raise ServeError(
            f"--adapter {path}: a {peft_type.lower()} adapter needs per-request inputs besides the prompt, so it "
            "cannot be served.\n  fix: serve a LoRA, DoRA, prompt-tuning, prefix-tuning or LLaMA-Adapter adapter"
        )
    return folder


def run_tokenizer(run_dir: Path):
    """The tokenizer saved with the run, carrying the chat template it was trained with."""
    from tunelab.models.load import load_tokenizer, use_trained_template
    from tunelab.models.merge import run_config

    config = run_config(run_dir)
    folder = run_dir / "model" if (run_dir / "model").is_dir() else run_dir / "adapter"
    tokenizer = load_tokenizer(folder, trust_remote_code=config.model.trust_remote_code)
    use_trained_template(run_dir, config, tokenizer)
    return tokenizer


def _load_base(target: str, device: str):
    """``(model, tokenizer, served)`` for a run folder or a model name/folder."""
    from tunelab.config import ModelArgs
    from tunelab.models.load import load_model, load_run

    if is_run_folder(target):
        run_dir = Path(target)
        if (run_dir / "adapter").is_dir():
            adapter_folder(run_dir)  # refuses unservable adapter types with a clear message
        loaded = load_run(run_dir, device=device)
        name = run_dir.resolve().name
        if hasattr(loaded.model, "set_adapter"):
            return loaded.model, loaded.tokenizer, {name: "default", loaded.config.model.name: None}
        return loaded.model, loaded.tokenizer, {name: None}
    model, tokenizer = load_model(ModelArgs(name=str(target)), device=device)
    model.eval()
    return model, tokenizer, {str(target): None}


def attach_adapters(model, adapters: Mapping[str, str | Path], served: dict[str, str | None]):
    """Load each ``NAME=PATH`` adapter into ``model`` (made a PeftModel if needed), unmerged."""
    for name, path in adapters.items():
        if name in served:
            raise ServeError(f"--adapter {name}={path}: the name '{name}' is already served; pick another")
        folder = adapter_folder(path)
        check_weights_folder(folder, f"--adapter {name}")  # peft would unpickle adapter_model.bin
        if hasattr(model, "load_adapter") and hasattr(model, "peft_config"):
            model.load_adapter(str(folder), adapter_name=name)
        else:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(folder), adapter_name=name)
        served[name] = name
    model.eval()
    return model


def load_engine(
    target: str,
    adapters: Mapping[str, str | Path] | None = None,
    *,
    device: str = "auto",
    draft: str | None = None,
    speculation: Speculation | None = None,
    cache_entries: int = 16,
    static_cache: bool = False,
    compile: bool = False,
    lean: bool = False,
) -> Engine:
    """Load ``target`` (+ adapters, + an optional draft model) into a ready :class:`Engine`."""
    model, tokenizer, served = _load_base(target, device)
    model = attach_adapters(model, adapters or {}, served)
    draft_model = None
    if draft is not None:  # a tunelab draft folder runs as it was measured (restricted head, int8: its recipe)
        from tunelab.infer.drafting import load_draft

        draft_model = load_draft(draft, device)
    cache = PrefixCache(max_entries=cache_entries) if cache_entries > 0 else None
    return Engine(model, tokenizer, served, prefix_cache=cache, draft_model=draft_model, speculation=speculation,
                  static_cache=static_cache, compile=compile, lean=lean)
