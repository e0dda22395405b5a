"""Typed ``method_args`` of every training method, torch-free.

The options of a method live under ``method_args:`` in a run config. Their schemas are here,
apart from the methods' torch code, so that :func:`tunelab.config.load_config` validates them
when the config loads (a typo fails before any weights load, with the key path and the valid
keys) and ``tunelab config explain method_args`` lists them without importing torch. The
methods read the same schemas back with :func:`parse_method_args`.

:data:`METHOD_ARGS` is keyed like :data:`tunelab.methods.METHODS`; a test keeps the two and the
planner's method table in agreement.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tunelab.errors import ConfigError
from tunelab.registry import Registry

#: Pairwise preference losses (``method_args.loss``) → whether the loss needs the frozen
#: reference policy. The functions are registered under the same names in
#: :data:`tunelab.methods.losses.LOSSES` (torch); a test keeps the two in agreement.
PAIR_LOSSES: dict[str, bool] = {
    "sigmoid": True,
    "ipo": True,
    "hinge": True,
    "robust": True,
    "simpo": False,
    "orpo": False,
}


class MethodArgs(BaseModel):
    """Base of every ``method_args`` schema: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    def reference(self) -> str:
        """What the frozen reference policy costs, in the planner's terms (``TrainSpec.reference``):
        ``"none"``, or ``"adapter"`` (the adapter-off base; a second frozen copy when the whole
        model is trained, which is what :class:`tunelab.methods.reference.Reference` loads)."""
        return "none"


class SFTArgs(MethodArgs):
    """``method: sft`` has no options (everything is in ``data`` and ``training``)."""


class PreferenceArgs(MethodArgs):
    """``method_args`` of dpo / simpo / orpo (one loss family; the method sets the default loss)."""

    loss: str = Field("sigmoid", description="sigmoid (DPO), ipo, hinge, robust, simpo, orpo.")
    beta: float = Field(0.1, gt=0, description="Inverse temperature of the implicit reward (SimPO: scale).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="robust: assumed label-flip rate.")
    gamma: float = Field(0.5, ge=0, description="SimPO target reward margin.")
    orpo_lambda: float = Field(0.1, gt=0, description="ORPO weight of the log odds-ratio term.")
    precompute_reference: bool = Field(False, description="Compute reference log-probs once before training.")

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        if value not in PAIR_LOSSES:
            ctx = {"name": value, "valid": ", ".join(PAIR_LOSSES)}
            raise PydanticCustomError("unknown_name", "unknown loss '{name}'. Valid losses: {valid}", ctx)
        return value

    def reference(self) -> str:
        # precompute_reference still holds the reference (a frozen copy for full/freeze) while
        # training, so it does not lower the peak.
        return "adapter" if PAIR_LOSSES[self.loss] else "none"


class DPOArgs(PreferenceArgs):
    """``method_args`` of ``method: dpo`` (IPO, hinge and robust DPO are its ``loss`` choices)."""


class SimPOArgs(PreferenceArgs):
    """``method_args`` of ``method: simpo``."""

    loss: str = Field("simpo", description="simpo by default; any pairwise loss name is accepted.")


class ORPOArgs(PreferenceArgs):
    """``method_args`` of ``method: orpo``."""

    loss: str = Field("orpo", description="orpo by default; any pairwise loss name is accepted.")


class KTOArgs(MethodArgs):
    """``method_args`` of ``method: kto``."""

    beta: float = Field(0.1, gt=0, description="Inverse temperature of the implicit reward.")
    desirable_weight: float = Field(1.0, gt=0, description="Weight of desirable examples (λ_D).")
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of undesirable examples (λ_U).")

    def reference(self) -> str:
        return "adapter"


class RewardArgs(MethodArgs):
    """``method_args`` of ``method: reward``."""

    use_margin: bool = Field(True, description="Subtract each pair's 'margin' column (0 if absent) inside the loss.")


class PPOArgs(MethodArgs):
    """``method_args`` of ``method: ppo``."""

    reward_model: str | None = Field(None, description="Run folder of a finished method: reward run.")
    reward_function: str | None = Field(None, description="Name of a registered rule-based reward function.")
    rollout_batch_size: int = Field(16, ge=2, description="Prompts per rollout.")
    ppo_epochs: int = Field(2, ge=1, description="Passes over each rollout.")
    max_new_tokens: int = Field(32, ge=1, description="Longest generated completion.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of rollouts.")
    top_k: int = Field(0, ge=0, description="Top-k sampling of rollouts (0 = off).")
    kl_coef: float = Field(0.05, ge=0, description="β of the per-token KL penalty (initial value if adaptive).")
    target_kl: float | None = Field(None, gt=0, description="Adaptive KL controller target (null = fixed β).")
    kl_horizon: int = Field(10000, ge=1, description="Adaptive KL controller horizon.")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ.")
    cliprange: float = Field(0.2, gt=0, description="Policy ratio clip ε.")
    cliprange_value: float = Field(0.2, gt=0, description="Value clip.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")

    @model_validator(mode="after")
    def _one_reward(self) -> PPOArgs:
        if (self.reward_model is None) == (self.reward_function is None):
            raise ValueError("set exactly one of reward_model (a reward run folder) or reward_function (a name)")
        return self

    def reference(self) -> str:
        return "adapter"


class DistillArgs(MethodArgs):
    """``method_args`` of ``method: distill`` (the student is ``model``, trained on ``data``).

    The ``loss`` names are those of :data:`tunelab.methods.distill_losses.DIVERGENCES` (torch);
    a test keeps the two in agreement.
    """

    teacher: str | None = Field(
        None, description="(required) Teacher: a model name, model folder or run folder with the student's tokenizer."
    )
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "forward_kl", description="forward_kl KL(teacher||student), reverse_kl KL(student||teacher), jsd (with beta)."
    )
    beta: float = Field(0.5, ge=0, le=1, description="jsd: teacher weight in the mixture (0 forward, 1 reverse KL).")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of both distributions (loss scaled by T^2).")
    alpha: float = Field(0.0, ge=0, le=1, description="Weight of the SFT cross-entropy on the labels (1 - alpha: KD).")
    teacher_logits: Literal["online", "cache"] = Field(
        "online", description="online: teacher forward every step; cache: top-k once to <run>/teacher_topk.safetensors."
    )
    top_k: int = Field(32, ge=1, description="cache: teacher tokens kept per position (the rest is one bucket).")
    vocab: list[int] | None = Field(
        None,
        description="Restrict both distributions to these token ids (a speculative draft's output head): the student's "
        "head keeps their rows, the teacher is conditioned on them; labels outside are not trained.",
    )

    @model_validator(mode="after")
    def _vocab_ids(self) -> DistillArgs:
        if self.vocab is not None:
            if len(self.vocab) < 2 or min(self.vocab) < 0 or len(set(self.vocab)) != len(self.vocab):
                raise ValueError("method_args.vocab: at least 2 distinct, non-negative token ids")
        return self

    @model_validator(mode="after")
    def _needs_a_teacher(self, info: ValidationInfo) -> DistillArgs:
        # The planner models a run without one (the teacher then has the student's architecture).
        if self.teacher is None and not (info.context or {}).get("planning"):
            raise ValueError("method distill needs a teacher: set method_args.teacher (a model name, folder or run)")
        return self


#: method name → its ``method_args`` schema (same names as :data:`tunelab.methods.METHODS`).
METHOD_ARGS: Registry[type[MethodArgs]] = Registry("method", key="method")
METHOD_ARGS.register("sft", SFTArgs)
METHOD_ARGS.register("dpo", DPOArgs)
METHOD_ARGS.register("simpo", SimPOArgs)
METHOD_ARGS.register("orpo", ORPOArgs)
METHOD_ARGS.register("kto", KTOArgs)
METHOD_ARGS.register("reward", RewardArgs)
METHOD_ARGS.register("ppo", PPOArgs)
METHOD_ARGS.register("distill", DistillArgs)


def problem_lines(schema: type[BaseModel], errors: list[dict[str, Any]], prefix: str = "method_args") -> list[str]:
    """One line per validation problem of ``schema``: ``prefix.key: what is wrong``.

    Unknown keys suggest the closest valid key and list the valid ones.
    """
    import difflib

    lines = []
    for e in errors:
        key = ".".join([prefix, *(str(p) for p in e["loc"])])
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(e["loc"][-1]), list(schema.model_fields), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            valid = ", ".join(schema.model_fields) or "none (this method has no options)"
            lines.append(f"  {key}: unknown key. {hint}valid keys here: {valid}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {key}: {e.get('input')!r} — {msg}" if e["loc"] else f"  {key}: {msg}")
    return lines


def parse_method_args(method: str, raw: dict[str, Any], *, planning: bool = False) -> MethodArgs:
    """The typed ``method_args`` of ``method``.

    :func:`tunelab.config.load_config` has already validated them; this is how a method reads
    them (and re-checks a dict changed in Python after loading). ``planning`` relaxes what only
    training needs (distill's teacher), for the memory planner.

    Raises:
        ConfigError: unknown method or invalid options (every problem listed, with valid keys).
    """
    schema = METHOD_ARGS.get(method)
    try:
        return schema.model_validate(raw, context={"planning": planning})
    except ValidationError as err:
        lines = [f"method_args of method={method}: {err.error_count()} problem(s)"]
        lines += problem_lines(schema, err.errors())
        lines.append("  fix: see `tunelab config explain method_args." + method + "`")
        raise ConfigError("\n".join(lines)) from None


def planner_reference(method: str, raw: dict[str, Any]) -> str:
    """``TrainSpec.reference`` of a run of ``method`` with ``method_args`` ``raw``.

    A name only the planner knows (``ipo``, dpo's ``loss: ipo``) gets ``"adapter"``, the
    planner's default. Distillation's teacher is not a reference: the planner holds it as its own
    frozen model (``TrainSpec.teacher_arch``).
    """
    return parse_method_args(method, raw, planning=True).reference() if method in METHOD_ARGS else "adapter"
