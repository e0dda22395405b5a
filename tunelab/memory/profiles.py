"""Profiles: how a training toolkit spends memory around the model, written as ``tunelab plan`` flags.

Two runs of the same model, adapter, batch and sequence length differ by gigabytes depending on
the code around the model: whether adapters are fp32 or bf16, whether the loss upcasts the whole
logits tensor, whether the loop keeps the previous step's graph. The planner models each of
those as a :class:`~tunelab.memory.training.TrainSpec` field with a ``tunelab plan`` flag; a
profile is a named set of those flag values, read in the toolkit's source (never fitted to a
published number), so ``tunelab plan --profile torchtune ...`` describes a torchtune run and
``bench/memory_published.py`` checks published peaks through the very same profiles.

A profile's values are flag values (``PlanFlags`` field names); a flag given on the command line
wins over the profile. ``quantized`` values are added when the base model is quantized (QLoRA),
because toolkits prepare a 4-bit model differently from a 16-bit one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tunelab.errors import ConfigError
from tunelab.registry import Registry

#: ``--adapter-dtype`` -> bytes per adapter weight, gradient and Adam moment element.
ADAPTER_DTYPES: Registry[float] = Registry("adapter dtype", key="--adapter-dtype")
ADAPTER_DTYPES.register("fp32", 4)  # peft upcasts adapters to fp32 (autocast_adapter_dtype)
ADAPTER_DTYPES.register("bf16", 2)
ADAPTER_DTYPES.register("fp16", 2)

#: The flags every profile states, and what each one is called on the command line.
MECHANISM_FLAGS: dict[str, str] = {
    "adapter_dtype": "--adapter-dtype",
    "chunked_loss": "--chunked-loss",
    "recomputed_loss": "--recomputed-loss",
    "optimizer_in_backward": "--optimizer-in-backward",
    "offload_activations": "--offload-activations",
    "bnb_kept_inputs": "--bnb-kept-inputs",
    "keep_previous_graph": "--keep-previous-graph",
    "quantized_head": "--quantized-head",
    "dequant_copies": "--dequant-copies",
    "kbit_upcast": "--kbit-upcast",
}
#: Other flags a profile may set (the run's settings that a toolkit fixes).
SETTING_FLAGS: dict[str, str] = {
    "precision": "--precision",
    "checkpointing": "--gradient-checkpointing",
    "double_quant": "--double-quant",
}
#: Boolean flags and their ``--no-`` form.
NEGATIONS: dict[str, str] = {
    "--chunked-loss": "--full-loss",
    "--recomputed-loss": "--no-recomputed-loss",
    "--gradient-checkpointing": "--no-gradient-checkpointing",
    "--double-quant": "--no-double-quant",
}


@dataclass(frozen=True)
class Profile:
    """A toolkit's memory behaviour as flag values (see the module docstring)."""

    name: str
    summary: str
    source: str
    flags: Mapping[str, Any]
    quantized: Mapping[str, Any] = field(default_factory=dict)

    def values(self, quantized: bool) -> dict[str, Any]:
        """The flag values for a run whose base is (or is not) quantized."""
        return {**self.flags, **(self.quantized if quantized else {})}

    def command_line(self, quantized: bool = False) -> str:
        """The explicit flags this profile stands for (shown by ``--help`` and docs/memory.md)."""
        return _command(self.values(quantized))


def _command(values: Mapping[str, Any]) -> str:
    return " ".join(_flag_text(key, value) for key, value in values.items())


def _flag_text(key: str, value: Any) -> str:
    flag = MECHANISM_FLAGS.get(key) or SETTING_FLAGS[key]
    if isinstance(value, bool):
        return flag if value else NEGATIONS.get(flag, "--no-" + flag.removeprefix("--"))
    return f"{flag} {value}"


#: Nothing beyond the model's own tensors (the values of a 16-bit toolkit without extras).
_PLAIN = {
    "adapter_dtype": "fp32",
    "chunked_loss": False,
    "recomputed_loss": False,
    "optimizer_in_backward": False,
    "offload_activations": False,
    "bnb_kept_inputs": False,
    "keep_previous_graph": False,
    "quantized_head": False,
    "dequant_copies": 1,
    "kbit_upcast": False,
}
#: What tunelab/train/loop.py does: peft adapters in fp32 (peft upcasts them), the SFT and
#: preference log-probs keep no logits (tunelab/methods/lm_loss.py: the head and log-softmax
#: in chunks, recomputed in backward), the loop keeps only floats between steps,
#: bitsandbytes >= 0.48 (no kept 4-bit inputs), the head is never quantized (transformers skips
#: it), and a quantized base goes through peft's ``prepare_model_for_kbit_training``
#: (tunelab/models/adapters.py), which casts every non-4-bit parameter to fp32. Precision is
#: not fixed: the loop's ``auto`` is the precision probe's measured choice, so the plan reads a
#: run folder's precision.json, else assumes bf16 weights on a GPU and fp32 + autocast on CPU.
_TUNELAB = {**_PLAIN, "kbit_upcast": True, "recomputed_loss": True}

#: --profile NAME -> Profile (registration order is the order --help shows).
PROFILES: Registry[Profile] = Registry("profile", key="--profile")
for _profile in (
    Profile(
        "tunelab",
        "tunelab's own loop (the default)",
        "tunelab/train/loop.py, tunelab/methods/sft.py, tunelab/models/load.py + adapters.py",
        _TUNELAB,
    ),
    Profile(
        "transformers-peft",
        "plain transformers Trainer(bf16=True) + peft, as peft's guides do it",
        "transformers 5 from_pretrained(dtype='auto') keeps the checkpoint's bf16; ForCausalLMLoss "
        "upcasts logits to fp32; peft keeps adapters fp32; prepare_model_for_kbit_training casts "
        "non-4-bit params to fp32 and turns gradient checkpointing on",
        {"precision": "bf16", **_TUNELAB, "recomputed_loss": False},
        {"checkpointing": True},
    ),
    Profile(
        "litgpt",
        "LitGPT finetune/lora.py with precision bf16-true",
        "litgpt/finetune/lora.py (fit() keeps the previous step's logits); QLoRA: Lightning Fabric "
        "BitsandbytesPrecision('nf4'): head quantized too, no double quant, fp16 quant state "
        "(2 dequantized copies), bitsandbytes 0.42 keeps each 4-bit layer's input",
        {"precision": "bf16", **_PLAIN, "adapter_dtype": "bf16", "keep_previous_graph": True},
        {"double_quant": False, "quantized_head": True, "dequant_copies": 2, "bnb_kept_inputs": True},
    ),
    Profile(
        "torchtune",
        "torchtune recipes: bf16 model and LoRA (add --chunked-loss, --optimizer-in-backward, "
        "--offload-activations as your config sets them)",
        "torchtune recipes (dtype bf16 for weights and LoRA params); the loss, optimizer_in_bwd and "
        "enable_activation_offloading are per-config options, so they are flags, not profile values",
        {"precision": "bf16", **_PLAIN, "adapter_dtype": "bf16"},
    ),
):
    PROFILES.register(_profile.name, _profile)
del _profile

DEFAULT_PROFILE = "tunelab"


def find_profile(name: str | None) -> Profile:
    """The profile called ``name`` (None = tunelab's own).

    Raises:
        ConfigError: unknown name; the message lists the valid ones.
    """
    return PROFILES.get(name or DEFAULT_PROFILE)


def mechanism_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The TrainSpec fields of the mechanism flag values ``values`` (None or absent = off / fp32 / 1).

    Raises:
        ConfigError: an unknown ``--adapter-dtype`` or a ``--dequant-copies`` below 1.
    """
    copies = 1 if values.get("dequant_copies") is None else values["dequant_copies"]
    if copies < 1:
        raise ConfigError(
            f"--dequant-copies: {copies} is not a count of copies\n"
            "  fix: 1 (bitsandbytes dequantizes to the compute dtype), 2 for an fp16 quant state cast to bf16"
        )
    return {
        "adapter_bytes": adapter_bytes(values.get("adapter_dtype") or "fp32"),
        "loss": _loss(values),
        "optimizer_in_backward": bool(values.get("optimizer_in_backward")),
        "offload_activations": bool(values.get("offload_activations")),
        "quantized_inputs_saved": bool(values.get("bnb_kept_inputs")),
        "keeps_previous_graph": bool(values.get("keep_previous_graph")),
        "quantize_head": bool(values.get("quantized_head")),
        "dequant_copies": copies,
        "kbit_upcast": bool(values.get("kbit_upcast")),
    }


def _loss(values: Mapping[str, Any]) -> str:
    if values.get("recomputed_loss"):
        return "recomputed"
    return "chunked" if values.get("chunked_loss") else "full"


def adapter_bytes(dtype: str) -> float:
    """Bytes per adapter element for ``--adapter-dtype``.

    Raises:
        ConfigError: unknown dtype.
    """
    return ADAPTER_DTYPES.get(dtype)


def help_text() -> str:
    """``--profile`` help: every profile with what it sets beyond the plain mechanisms."""
    parts = []
    for p in map(PROFILES.get, PROFILES):
        beyond = {key: value for key, value in p.flags.items() if _PLAIN.get(key, ...) != value}
        text = f"{p.name} = {p.summary}: {_command(beyond) or 'nothing beyond them'}"
        parts.append(text + (f", a quantized base adds {_command(p.quantized)}" if p.quantized else ""))
    return (
        "Whose training code to plan (default tunelab). Plain mechanisms: "
        + _command(_PLAIN)
        + ". "
        + "; ".join(parts)
        + ". Flags given override the profile."
    )
