"""Load a model for training or inference: dtype, quantization, attention kernel, adapters.

The single place that calls ``from_pretrained``; everything else asks for
:func:`load_model` (a model name + options) or :func:`load_run` (a run folder: base + its
adapter, or its fully fine-tuned model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.config import AdapterArgs, DataArgs, ModelArgs, RunConfig
from tunelab.errors import CheckpointError, ModelError
from tunelab.models.resolve import resolve_model
from tunelab.models.safe_load import check_weights_folder

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def default_device(requested: str = "auto") -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("training.device=cuda but no CUDA GPU is visible.\n  fix: use device=auto or cpu")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def dtype_name(name: str, device: str, *, for_training: bool = False) -> str:
    """Weight dtype (fp32, bf16, fp16) that ``name`` means on ``device``.

    ``auto`` for inference (chat, serve, reward scoring, evaluation) is the dtype the
    precision probe measured fastest here (:mod:`tunelab.models.precision`). For training it
    keeps fp32 weights (master weights; autocast gives the speed), except that on a GPU
    where the probe chose bf16 the base is loaded in bf16, which halves the frozen weights'
    memory as the planner assumes (fp16 weights cannot be trained with a grad scaler).
    """
    if name != "auto":
        return name
    from tunelab.models.precision import choose_precision

    chosen = choose_precision("auto", device).dtype
    if for_training:
        return "bf16" if device != "cpu" and chosen == "bf16" else "fp32"
    return chosen


def torch_dtype(name: str, device: str, *, for_training: bool = False):
    import torch

    return getattr(torch, DTYPES[dtype_name(name, device, for_training=for_training)])


def quantization_config(args: ModelArgs, device: str = "cpu"):
    """bitsandbytes config for ``args.quantization`` (None for unquantized).

    ``compute_dtype: auto`` is fp32 on CPU, where bitsandbytes' 4-bit training path
    (dequantize + matmul) is ~15x slower in bf16 whatever the matmul probe says, and the
    probe's choice elsewhere.
    """
    import torch
    from transformers import BitsAndBytesConfig

    if args.quantization == "nf4":
        compute = args.compute_dtype
        if compute == "auto":
            compute = "fp32" if device == "cpu" else dtype_name("auto", device)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=args.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, DTYPES[compute]),
        )
    if args.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def _check_attn(impl: str) -> None:
    if impl == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise ModelError(
                "model.attn_implementation=flash_attention_2 needs the flash-attn package (CUDA only).\n"
                "  fix: pip install flash-attn, or use sdpa (the default)"
            )


def load_tokenizer(path: Path | str, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # causal LMs often ship without a pad token
    return tokenizer


def load_model(
    model_args: ModelArgs,
    adapter_args: AdapterArgs | None = None,
    *,
    for_training: bool = False,
    device: str = "auto",
    gradient_checkpointing: bool = False,
):
    """Load ``model_args.name`` (and attach a fresh adapter when ``adapter_args`` is given).

    Returns:
        ``(model, tokenizer)``; the model is on ``device`` and in train/eval mode as asked.
    """
    from tunelab.utils.quiet import quiet_third_party

    quiet_third_party()
    from transformers import AutoModelForCausalLM

    from tunelab.models.adapters import attach_adapter

    resolved = resolve_model(model_args.name)
    device = default_device(device)
    _check_attn(model_args.attn_implementation)
    quant = quantization_config(model_args, device)
    safetensors = check_weights_folder(resolved.path, f"model '{model_args.name}'", allow=model_args.allow_pickle)
    kwargs: dict = {
        "attn_implementation": model_args.attn_implementation,
        "use_safetensors": True if safetensors else None,  # None: transformers may fall back to the allowed pickle
        "trust_remote_code": model_args.trust_remote_code,  # explicit False: never run a folder's own code
    }
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device}
        kwargs["dtype"] = torch_dtype("fp32" if device == "cpu" else "auto", device, for_training=for_training)
    else:
        kwargs["dtype"] = torch_dtype(model_args.dtype, device, for_training=for_training)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(resolved.path), **kwargs)
    except (OSError, ValueError) as err:
        raise ModelError(f"could not load model '{model_args.name}' from {resolved.path}: {err}") from err
    if quant is None:
        model.to(device)
    tokenizer = load_tokenizer(resolved.path, trust_remote_code=model_args.trust_remote_code)
    if gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers 5's name
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if for_training:
        # With a KV cache, transformers ignores restarting position_ids and packed examples
        # would attend to each other; training never needs the cache.
        model.config.use_cache = False
    if for_training and quant is not None:
        _keep_4bit_weights_differentiable(model)
    if adapter_args is not None:
        model = attach_adapter(model, adapter_args, str(resolved.path), gradient_checkpointing=gradient_checkpointing)
    model.train(for_training)
    return model, tokenizer


def _keep_4bit_weights_differentiable(model) -> None:
    """Stop bitsandbytes from repacking NF4 weights for CPU inference during training.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 converts a ``Linear4bit`` weight to a packed
    inference layout the first time the layer runs in eval mode (our periodic validation), and
    from then on routes *training* forwards through ``gemv_4bit``, which has no autograd
    kernel: gradients stop flowing through every quantized layer, so all LoRA weights below
    the top layer get wrong gradients. Training models keep the differentiable layout.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


@dataclass
class LoadedRun:
    model: object
    tokenizer: object
    config: RunConfig
    run_dir: Path


def load_run(
    run_dir: str | Path,
    *,
    device: str = "auto",
    dtype: str = "auto",
    merge: bool = False,
    quantization: str | None = None,
    as_trained: bool = False,
) -> LoadedRun:
    """Load a finished run: the base with its trained adapter, or the fully fine-tuned model.

    The tokenizer (and so the chat template and EOS) is the one saved with the run. The base is
    quantized as it was in training (a QLoRA adapter sees the same NF4 base) unless
    ``quantization`` says otherwise.

    ``merge=True`` folds the adapter into the weights it was trained against: for a quantized
    base (QLoRA, int8) those are the *dequantized* codes, W' = dequant(Q(W)) + ΔW, not the
    original W (merging into W would add the rounding error Q(W) − W back to every layer; on the
    quickstart run that cost a third of the greedy tokens). ``as_trained=True`` keeps quantized
    layers on bitsandbytes' differentiable path (fp32 dequantize + matmul, as in training)
    instead of its bf16 CPU inference kernel, for exact comparisons.
    """
    from tunelab.config import load_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (no config.yaml).\n  fix: pass runs/NAME")
    config = load_config(run_dir / "config.yaml")
    model_folder, adapter_folder = run_dir / "model", run_dir / "adapter"
    if model_folder.is_dir():
        args = config.model.model_copy(update={"name": str(model_folder), "quantization": "none", "dtype": dtype})
        model, _ = load_model(args, device=device)
        tokenizer = load_tokenizer(model_folder, trust_remote_code=config.model.trust_remote_code)
    elif adapter_folder.is_dir():
        from peft import PeftModel

        check_weights_folder(adapter_folder, "the adapter", allow=config.model.allow_pickle)  # before the base loads
        update = {"dtype": dtype} if quantization is None else {"dtype": dtype, "quantization": quantization}
        base, _ = load_model(config.model.model_copy(update=update), device=device)
        if as_trained or merge:
            _keep_4bit_weights_differentiable(base)  # before any forward: a repacked weight cannot be dequantized
        if merge and getattr(base, "is_quantized", False):
            base = base.dequantize()
        model = PeftModel.from_pretrained(base, str(adapter_folder))
        if merge and hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        tokenizer = load_tokenizer(adapter_folder, trust_remote_code=config.model.trust_remote_code)
    else:
        raise CheckpointError(
            f"{run_dir} has neither adapter/ nor model/: the run did not finish.\n"
            f"  fix: resume it with `tunelab train {run_dir}/config.yaml --resume`"
        )
    config = use_trained_template(run_dir, config, tokenizer)
    model.eval()
    return LoadedRun(model, tokenizer, config, run_dir)


def use_trained_template(run_dir: Path, config: RunConfig, tokenizer) -> RunConfig:
    """Give ``tokenizer`` the chat template the run was trained with; returns the config to render with.

    The run's ``chat_template.jinja`` when there is one; for a run saved before that file existed,
    the template rebuilt from ``config.data`` (alpaca/qa/...; left as saved if it cannot be rebuilt,
    e.g. a Jinja file that has moved). A Jinja-file template is pointed at the run's copy, so code
    that renders with ``config.data`` (reward scoring) does not depend on the original path.
    """
    from tunelab.data.templates import TEMPLATES, trained_chat_template
    from tunelab.errors import DataError

    saved = run_dir / TRAINED_TEMPLATE
    if saved.is_file():
        tokenizer.chat_template = saved.read_text(encoding="utf-8")
        if config.data.template not in TEMPLATES:
            data = config.data.model_copy(update={"template": str(saved), "system_prompt": None})
            return config.model_copy(update={"data": data})
        return config
    try:
        template = trained_chat_template(config.data.template, tokenizer, config.data.system_prompt)
    except DataError:
        template = None
    if template is not None:
        tokenizer.chat_template = template
    return config


#: The template a run was trained with, as Jinja, in the run folder (``RUN/chat_template.jinja``).
TRAINED_TEMPLATE = "chat_template.jinja"


def save_trained(
    model, tokenizer, folder: Path, adapter_type: str, *, data: DataArgs | None = None, state_dict: dict | None = None
) -> None:
    """Save an adapter (peft format) or a full model, with tokenizer, chat template and generation config.

    With ``data`` (the run's data section), the chat template saved with the tokenizer is the one
    the run was *trained* with (:func:`tunelab.data.templates.trained_chat_template`: alpaca, qa,
    the model's own or a Jinja file, with the system prompt), and a copy goes to
    ``folder.parent / chat_template.jinja`` (``folder`` is ``RUN/adapter`` or ``RUN/model``). Chat,
    serve, reward scoring and every export read it from there, so they render prompts as training did.
    ``state_dict``: full weights gathered from FSDP / DeepSpeed ZeRO-3 shards (the loop's
    :func:`tunelab.train.distributed.full_state`); ``None`` saves the model's own.
    """
    folder.mkdir(parents=True, exist_ok=True)
    extra = {} if state_dict is None else {"state_dict": state_dict}
    model.save_pretrained(folder, safe_serialization=True, **extra)
    if adapter_type not in ("freeze", "full"):
        # peft writes only the adapter; keep the generation config (EOS ids) beside it.
        base = model.get_base_model()
        if getattr(base, "generation_config", None) is not None:
            base.generation_config.save_pretrained(folder)
    template = None
    if data is not None:
        from tunelab.data.templates import trained_chat_template

        template = trained_chat_template(data.template, tokenizer, data.system_prompt)
    own = getattr(tokenizer, "chat_template", None)
    try:  # the caller's tokenizer keeps its own template (the loop may still render data with it)
        if template is not None:
            tokenizer.chat_template = template
        tokenizer.save_pretrained(folder)
    finally:
        tokenizer.chat_template = own
    if template is not None:
        (folder.parent / TRAINED_TEMPLATE).write_text(template, encoding="utf-8")
