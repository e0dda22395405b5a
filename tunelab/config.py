"""Typed, documented run configuration.

A run is described by one YAML file validated into :class:`RunConfig`. Command-line overrides
(``training.max_steps=50 adapter.r=8``) are applied to the YAML tree before validation, and
every problem is reported at once with its key path, the value given and the valid choices.
The resolved config is saved as ``<run>/config.yaml`` so ``tunelab train <run>/config.yaml
--resume`` continues the same run.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tunelab.errors import ConfigError
from tunelab.methods import METHODS
from tunelab.methods.args import METHOD_ARGS, problem_lines

Dtype = Literal["auto", "fp32", "bf16", "fp16"]
AdapterType = Literal["lora", "qlora", "dora", "prompt_tuning", "prefix_tuning", "llama_adapter", "freeze", "full"]
# Method names are validated against the lazy registry tunelab.methods.METHODS (listing its
# names imports no torch), and method_args against the method's schema in tunelab.methods.args.
DEFAULT_METHOD = "sft"


class Section(BaseModel):
    """Base of every config section: unknown keys are errors (typos never pass silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelArgs(Section):
    """Which model to load and how."""

    name: str = Field(
        "smollm2-135m-instruct",
        description="Model: 'smollm2-135m-instruct' (bundled), 'tiny' (tests), a folder, a .gguf file, "
        "or a repo id in the local Hugging Face cache.",
    )
    dtype: Dtype = Field(
        "auto",
        description="Weight dtype. 'auto' = for inference, the dtype chosen by a measured probe (fastest matmuls "
        "on this machine); for training, fp32 master weights (bf16 frozen weights on a GPU where the probe chose bf16)",
    )
    quantization: Literal["none", "int8", "nf4"] = Field(
        "none", description="bitsandbytes quantization of the frozen base weights (qlora implies nf4)."
    )
    double_quant: bool = Field(True, description="NF4 double quantization (quantize the quantization constants).")
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="Compute dtype of 4-bit layers. 'auto' = chosen by a measured probe on GPUs, fp32 on CPU "
        "(bitsandbytes' CPU training path is ~15x slower with bf16; a bf16 autocast still runs the matmuls in bf16).",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernel: sdpa (default), eager, or flash_attention_2 when installed."
    )
    allow_pickle: bool = Field(
        False,
        description="Load weights stored as pickles (pytorch_model.bin, adapter_model.bin, .pt), which can run "
        "code when loaded. Off: safetensors only (see docs/security.md). CLI: --allow-pickle.",
    )
    trust_remote_code: bool = Field(
        False,
        description="Run the Python code a model folder ships (config.json auto_map). Off: only architectures "
        "transformers itself implements load.",
    )


class AdapterArgs(Section):
    """What is trained: an adapter type and its shape."""

    type: AdapterType = Field("lora", description="Adapter type; 'full' trains every weight.")
    r: int = Field(8, ge=1, description="LoRA/DoRA rank.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Modules that get LoRA: 'all-linear' or names like [q_proj, v_proj]."
    )
    num_virtual_tokens: int = Field(16, ge=1, description="Prompt/prefix tuning: number of virtual tokens.")
    prompt_init_text: str | None = Field(
        None, description="Prompt tuning: initialise the soft prompt from this text (random if unset)."
    )
    adapter_len: int = Field(10, ge=1, description="LLaMA-Adapter: length of the adaption prompt.")
    adapter_layers: int = Field(2, ge=1, description="LLaMA-Adapter: number of top layers adapted.")
    freeze_train_layers: int = Field(
        2, ge=1, description="freeze: train only the last N decoder layers (+ final norm)."
    )


class DataArgs(Section):
    """Where the data is and how it becomes token rows."""

    path: str | None = Field(
        None, description="Training data: .jsonl, .json, .csv, .parquet or a saved HF dataset folder."
    )
    validation_path: str | None = Field(None, description="Separate validation file (else split from `path`).")
    format: Literal["auto", "alpaca", "qa", "messages", "sharegpt", "text", "preference", "unpaired", "prompt"] = Field(
        "auto", description="Row format; 'auto' detects it from the columns."
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="Column mapping, our name -> your column, e.g. {instruction: question}."
    )
    template: str = Field(
        "chat", description="'chat' (the model's own chat template), 'alpaca', 'qa', or a path to a Jinja file."
    )
    system_prompt: str | None = Field(None, description="System message added to chat-template rows that have none.")
    max_length: int = Field(512, ge=8, description="Tokens per example; longer examples are truncated (and counted).")
    packing: bool = Field(
        True, description="Pack examples into rows of max_length with position_ids restarting per example."
    )
    train_on_prompt: bool = Field(False, description="Also compute the loss on prompt tokens.")
    validation_split: float = Field(0.1, ge=0, lt=1, description="Fraction held out for validation (seeded).")
    seed: int = Field(42, description="Seed of the train/validation split.")
    skip_invalid: bool = Field(
        False, description="Drop invalid rows (counted and written to rejects.jsonl) instead of failing."
    )
    max_prompt_length: int = Field(256, ge=1, description="Preference/prompt data: longest prompt allowed, in tokens.")


class TrainArgs(Section):
    """The training loop."""

    max_steps: int = Field(
        100, ge=1, description="Optimizer steps (each = micro_batch_size x grad_accum examples/rows)."
    )
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="Time budget: no step starts after this many minutes of wall time since the run started (the "
        "final evaluation and save follow); the LR schedule then runs on time as well as on steps.",
    )
    micro_batch_size: int = Field(4, ge=1, description="Rows per forward pass.")
    gradient_accumulation: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="Schedule after warmup.")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine/linear: final lr as a fraction of the peak.")
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw", "paged_adamw_8bit", "sgd"] = Field(
        "adamw", description="adamw (fused where available), bitsandbytes 8-bit / paged AdamW, or SGD."
    )
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas.")
    max_grad_norm: float | None = Field(1.0, description="Clip the global gradient norm (null = no clipping).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    checkpoint_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Recompute only this fraction of the decoder layers (the first ones) in backward: memory "
        "between none and full gradient_checkpointing, at ~1/3 of each such layer's time "
        "(tunelab/train/activations.py).",
    )
    lean_activations: bool = Field(
        True,
        description="Save less for backward at equal math: LoRA dropout masks redrawn from a seed, the SwiGLU product "
        "recomputed (tunelab/train/activations.py).",
    )
    map_large_blocks: bool = Field(
        False,
        description="glibc (TUNELAB_MALLOC=system or no tcmalloc installed): map blocks of 1 MiB and more from the "
        "OS, so freed activations leave the resident set; costs a page fault per 4 KiB of each new activation "
        "(bench/alloc_faults.py, tunelab/train/activations.py).",
    )
    group_by_length: bool = Field(
        False,
        description="Batch rows of similar length together (seeded mega-batches sorted by length): less padding "
        "when data.packing is off.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Autocast dtype; master weights stay fp32. 'auto' = chosen by a measured probe: bf16 (or fp16) "
        "only where its matmuls ran faster than fp32 on this machine (cached per machine in $TUNELAB_HOME/precision).",
    )
    eval_every: int = Field(0, ge=0, description="Evaluate validation loss every N steps (0 = only at the end).")
    eval_batches: int = Field(0, ge=0, description="Validation micro-batches per evaluation (0 = all).")
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0 = only the final result).")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept.")
    log_every: int = Field(1, ge=1, description="Write metrics every N steps.")
    seed: int = Field(42, description="Seed of model init, dropout and data order.")
    max_bad_steps: int = Field(5, ge=1, description="Stop after this many non-finite steps in a row.")
    trackers: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="Experiment trackers (through accelerate)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train.")


class RunConfig(Section):
    """One run: model + adapter + data + method + training loop."""

    method: str = Field(
        DEFAULT_METHOD,
        description=f"Training method: {', '.join(METHODS)}. Its options go under method_args.",
    )
    name: str | None = Field(None, description="Run name (folder under output_dir); a timestamp if unset.")
    output_dir: str = Field("runs", description="Folder that holds run folders.")
    model: ModelArgs = Field(default_factory=ModelArgs)
    adapter: AdapterArgs = Field(default_factory=AdapterArgs)
    data: DataArgs = Field(default_factory=DataArgs)
    training: TrainArgs = Field(default_factory=TrainArgs)
    method_args: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,  # an empty dict is invalid for methods with required options (ppo)
        description="Options of the chosen method, checked against its schema when the config loads "
        "(`tunelab config explain method_args` lists them per method).",
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            close = METHODS.suggest(value)
            hint = f" did you mean {close[0]!r}?" if close else ""
            ctx = {"name": value, "hint": hint, "valid": ", ".join(METHODS)}
            raise PydanticCustomError("unknown_name", "unknown method '{name}'.{hint} Valid: {valid}", ctx)
        return value

    @field_validator("method_args")
    @classmethod
    def _method_args_match_schema(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # Kept as the dict the user wrote (defaults are the method's, so `method=orpo` on a saved
        # dpo config still gets orpo's loss); the method reads it back with parse_method_args.
        method = info.data.get("method")
        if method is None:  # the method itself is invalid: that error is reported instead
            return value
        try:
            METHOD_ARGS.get(method).model_validate(value)
        except ValidationError as err:
            raise PydanticCustomError(
                "method_args", "{count} problem(s) for method={method}", {"count": err.error_count(),
                "method": method, "errors": err.errors(include_url=False)}
            ) from None
        return value

    @model_validator(mode="after")
    def _qlora_means_nf4(self) -> RunConfig:
        if self.adapter.type == "qlora" and self.model.quantization == "none":
            self.model.quantization = "nf4"
        if self.adapter.type in ("full", "freeze") and self.model.quantization != "none":
            raise ValueError(
                f"adapter.type={self.adapter.type} trains base weights, which cannot be quantized "
                f"(model.quantization={self.model.quantization}); use lora/qlora/dora or quantization=none"
            )
        return self

    def run_dir(self) -> Path:
        if self.name is None:
            raise ConfigError("run has no name yet; call resolve_name() first")
        return Path(self.output_dir) / self.name


# --------------------------------------------------------------------------- loading


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """Parse ``key.path=value`` strings; values are read as YAML scalars (``8``, ``true``, ``[a, b]``)."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key.path=value (e.g. training.max_steps=50)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip().split("."), value))
    return parsed


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    for keys, value in parse_overrides(overrides):
        node = tree
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = value
    return tree


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: key path, value given, what is valid (and the closest valid name)."""
    lines = []
    section = ""  # the `config explain` section the fix line points at
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        given = e.get("input")
        if e["type"] == "method_args":  # the method's own schema: its problems, one line each
            ctx = e["ctx"]
            lines += problem_lines(METHOD_ARGS.get(ctx["method"]), ctx["errors"], prefix=key)
            section = f" method_args.{ctx['method']}"
            continue
        if e["type"] == "extra_forbidden":
            known = _known_keys(RunConfig, loc)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            lines.append(f"  {key}: unknown key. {hint}valid keys here: {', '.join(known)}")
            continue
        msg = e["msg"]
        if e["type"] == "literal_error":
            expected = e.get("ctx", {}).get("expected", "")
            choices = [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",")]
            close = difflib.get_close_matches(str(given), choices, n=1)
            msg = f"must be one of {expected}" + (f"; did you mean '{close[0]}'?" if close else "")
        lines.append(f"  {key}: {given!r} — {msg}")
    head = f"invalid config ({source}): {len(lines)} problem(s)"
    tail = f"  fix: see `tunelab config explain{section}` for every field and its meaning"
    return "\n".join([head, *lines, tail])


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> RunConfig:
    """Read YAML (or start from ``base``), apply overrides, validate.

    Raises:
        ConfigError: unreadable YAML or any invalid field (all problems listed at once).
    """
    tree: dict = dict(base or {})
    source = "defaults"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}\n  fix: pass a YAML file, e.g. examples/sft-lora.yaml")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{p}{where}: not valid YAML ({getattr(err, 'problem', err)})") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping (model:, adapter:, data:, training: ...)")
        tree.update(loaded)
    if overrides:
        tree = apply_overrides(tree, overrides)
        source += " + overrides"
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))

