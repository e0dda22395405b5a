"""Attach a trainable adapter to a base model, one builder per adapter type (a registry).

Papers: LoRA (Hu et al., 2021, arXiv:2106.09685); QLoRA (Dettmers et al., 2023,
arXiv:2305.14314: LoRA on an NF4 base with k-bit preparation); DoRA (Liu et al., 2024,
arXiv:2402.09353: LoRA on the direction, a learned magnitude); prompt tuning (Lester et al.,
2021, arXiv:2104.08691); prefix tuning (Li & Liang, 2021, arXiv:2101.00190); LLaMA-Adapter
(Zhang et al., 2023, arXiv:2303.16199; peft's AdaptionPrompt). ``freeze`` trains the last N
decoder layers and the final norm; ``full`` trains everything.

All peft adapters are real peft objects so that ``PeftModel.from_pretrained`` loads what we save.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from tunelab.config import AdapterArgs
from tunelab.errors import ConfigError
from tunelab.registry import Registry

#: Adapter types whose virtual tokens precede each sequence: packing and position_ids
#: cannot be used with them (the soft prompt is prepended once per row).
PROMPT_LEARNING = {"prompt_tuning", "prefix_tuning"}


def _lora(args: AdapterArgs, model: nn.Module, tokenizer_path: str):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=args.r,
        lora_alpha=args.alpha,
        lora_dropout=args.dropout,
        target_modules=args.target_modules,
        use_dora=args.type == "dora",
        task_type=TaskType.CAUSAL_LM,
    )


def _prompt_tuning(args: AdapterArgs, model: nn.Module, tokenizer_path: str):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType

    if args.prompt_init_text:
        return PromptTuningConfig(
            num_virtual_tokens=args.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=args.prompt_init_text,
            tokenizer_name_or_path=tokenizer_path,
            task_type=TaskType.CAUSAL_LM,
        )
    return PromptTuningConfig(num_virtual_tokens=args.num_virtual_tokens, task_type=TaskType.CAUSAL_LM)


def _prefix_tuning(args: AdapterArgs, model: nn.Module, tokenizer_path: str):
    from peft import PrefixTuningConfig, TaskType

    return PrefixTuningConfig(num_virtual_tokens=args.num_virtual_tokens, task_type=TaskType.CAUSAL_LM)


def _llama_adapter(args: AdapterArgs, model: nn.Module, tokenizer_path: str):
    from peft import AdaptionPromptConfig, TaskType

    layers = model.config.num_hidden_layers
    if args.adapter_layers > layers:
        raise ConfigError(f"adapter.adapter_layers: {args.adapter_layers} > the model's {layers} layers")
    return AdaptionPromptConfig(
        adapter_len=args.adapter_len, adapter_layers=args.adapter_layers, task_type=TaskType.CAUSAL_LM
    )


#: peft adapter type -> builder of its peft config ``(args, model, tokenizer_path) -> PeftConfig``.
PEFT_CONFIGS: Registry[Callable] = Registry("peft adapter type", key="adapter.type")
PEFT_CONFIGS.register("lora", _lora)
PEFT_CONFIGS.register("qlora", _lora)
PEFT_CONFIGS.register("dora", _lora)
PEFT_CONFIGS.register("prompt_tuning", _prompt_tuning)
PEFT_CONFIGS.register("prefix_tuning", _prefix_tuning)
PEFT_CONFIGS.register("llama_adapter", _llama_adapter)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of a HF causal LM (Llama, Mistral, Qwen, Gemma, Phi ...)."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ConfigError("adapter.type=freeze: cannot find the decoder layers of this architecture")
    return layers


def _freeze(model: nn.Module, args: AdapterArgs) -> nn.Module:
    layers = decoder_layers(model)
    if args.freeze_train_layers > len(layers):
        raise ConfigError(f"adapter.freeze_train_layers: {args.freeze_train_layers} > the model's {len(layers)} layers")
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers[-args.freeze_train_layers :]:
        for p in layer.parameters():
            p.requires_grad_(True)
    norm = getattr(getattr(model, "model", model), "norm", None)
    if norm is not None:
        for p in norm.parameters():
            p.requires_grad_(True)
    return model


def _full(model: nn.Module, args: AdapterArgs, tokenizer_path: str, gradient_checkpointing: bool) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _peft(model: nn.Module, args: AdapterArgs, tokenizer_path: str, gradient_checkpointing: bool) -> nn.Module:
    from peft import get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            # peft passes {} on, so torch would warn at every checkpointed layer; load_model's choice
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need a grad-requiring input
    return get_peft_model(model, PEFT_CONFIGS.get(args.type)(args, model, tokenizer_path))


#: adapter type (``adapter.type``) -> ``(model, args, tokenizer_path, gradient_checkpointing) -> model``.
#: Same names as :data:`tunelab.config.AdapterType` and the planner's
#: :data:`tunelab.memory.trainable.ADAPTERS` (tests/test_registry.py keeps the three in agreement).
ADAPTERS: Registry[Callable[[nn.Module, AdapterArgs, str, bool], nn.Module]] = Registry(
    "adapter type", key="adapter.type"
)
for _name in PEFT_CONFIGS:
    ADAPTERS.register(_name, _peft)
ADAPTERS.register("freeze", lambda model, args, tokenizer_path, gradient_checkpointing: _freeze(model, args))
ADAPTERS.register("full", _full)
#: Adapter types that peft implements (saved as a peft adapter folder).
PEFT_TYPES = frozenset(PEFT_CONFIGS)


def attach_adapter(
    model: nn.Module, args: AdapterArgs, tokenizer_path: str, *, gradient_checkpointing: bool
) -> nn.Module:
    """Return the model ready to train with ``args.type`` (peft model, or the model itself)."""
    return ADAPTERS.get(args.type)(model, args, tokenizer_path, gradient_checkpointing)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]
