"""Architecture facts of a decoder-only transformer and its parameter count, computed from them.

The planner never types in a parameter count: it reads the shape of the network from a
Hugging Face ``config.json`` (or a preset written in the same fields) and counts every tensor
the way the modelling code creates it — embeddings, untied output head, grouped-query
attention (``num_key_value_heads``), Mixture-of-Experts experts and router, biases and norms.
A test checks the count against the loaded ``tiny`` and bundled SmolLM2 models, and against
the published totals of Llama, Mistral, Mixtral and Qwen.

Family differences are data, not code paths: :data:`FAMILY_RULES` says, per ``model_type``,
how many norms a block has, whether q/k/v carry a bias and whether q/k are normalised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunelab.errors import ConfigError


@dataclass(frozen=True)
class FamilyRules:
    """How one model family deviates from the Llama block.

    Attributes:
        norms_per_layer: RMSNorm weight vectors per block (Llama 2; Gemma 2/3 have 4: pre/post
            attention and pre/post feed-forward).
        qkv_bias: q/k/v projections have a bias even when ``attention_bias`` is false (Qwen2).
        qk_norm: per-head RMSNorm of queries and keys, ``head_dim`` weights each (Gemma 3, Qwen3).
        tie_default: ``tie_word_embeddings`` when ``config.json`` omits it (the family's config class default).
    """

    norms_per_layer: int = 2
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_default: bool = False


FAMILY_RULES: dict[str, FamilyRules] = {
    "llama": FamilyRules(),
    "mistral": FamilyRules(),
    "mixtral": FamilyRules(),
    "phi3": FamilyRules(),
    "gemma": FamilyRules(tie_default=True),
    "gemma2": FamilyRules(norms_per_layer=4, tie_default=True),
    "gemma3_text": FamilyRules(norms_per_layer=4, qk_norm=True, tie_default=True),
    "gemma3": FamilyRules(norms_per_layer=4, qk_norm=True, tie_default=True),
    "qwen2": FamilyRules(qkv_bias=True),
    "qwen3": FamilyRules(qk_norm=True),
}

#: Projection names of a Llama-style block (Phi-3 fuses qkv and gate/up; the counts are equal).
ATTENTION_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_LINEARS = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Linear:
    """One linear layer of a block: ``out = in @ W.T (+ b)``; ``copies`` = experts holding it."""

    name: str
    in_features: int
    out_features: int
    bias: bool = False
    copies: int = 1

    @property
    def weight_numel(self) -> int:
        return self.in_features * self.out_features * self.copies

    @property
    def numel(self) -> int:
        return self.weight_numel + (self.out_features * self.copies if self.bias else 0)


@dataclass(frozen=True)
class Architecture:
    """Shape of a decoder-only LM, in ``config.json`` terms."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool = False
    mlp_bias: bool = False
    num_experts: int = 0  # 0 = dense MLP
    experts_per_token: int = 0
    max_position_embeddings: int = 0
    name: str = ""
    rules: FamilyRules = field(default_factory=FamilyRules)

    @property
    def q_dim(self) -> int:
        """Width of all query heads, ``H · d``."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of all key (or value) heads, ``H_kv · d`` (smaller than ``q_dim`` with GQA)."""
        return self.num_key_value_heads * self.head_dim

    def attention_linears(self) -> list[Linear]:
        """q, k, v, o of one block; GQA shrinks k and v to ``kv_dim`` outputs."""
        qkv_bias = self.attention_bias or self.rules.qkv_bias
        h = self.hidden_size
        return [
            Linear("q_proj", h, self.q_dim, qkv_bias),
            Linear("k_proj", h, self.kv_dim, qkv_bias),
            Linear("v_proj", h, self.kv_dim, qkv_bias),
            Linear("o_proj", self.q_dim, h, self.attention_bias),
        ]

    def mlp_linears(self) -> list[Linear]:
        """Gated MLP (SwiGLU/GeGLU); with MoE every expert holds a copy, plus the router."""
        h, i, e = self.hidden_size, self.intermediate_size, max(1, self.num_experts)
        linears = [
            Linear("gate_proj", h, i, self.mlp_bias, e),
            Linear("up_proj", h, i, self.mlp_bias, e),
            Linear("down_proj", i, h, self.mlp_bias, e),
        ]
        if self.num_experts:
            linears.append(Linear("router", h, self.num_experts))
        return linears

    def layer_linears(self) -> list[Linear]:
        return self.attention_linears() + self.mlp_linears()


@dataclass(frozen=True)
class ParamCounts:
    """Parameter count by part; ``total`` is what ``sum(p.numel() for p in model.parameters())`` gives."""

    embedding: int
    lm_head: int  # 0 when tied to the embedding
    per_layer_linear: int
    per_layer_norm: int
    final_norm: int
    layers: int

    @property
    def per_layer(self) -> int:
        return self.per_layer_linear + self.per_layer_norm

    @property
    def linear(self) -> int:
        """Parameters in the blocks' linear layers (what bitsandbytes quantizes)."""
        return self.per_layer_linear * self.layers

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.per_layer * self.layers + self.final_norm

    @property
    def not_quantized(self) -> int:
        """Embeddings, output head and norms: kept in 16/32 bits by bitsandbytes."""
        return self.total - self.linear


def count_parameters(arch: Architecture) -> ParamCounts:
    """Count parameters from the architecture.

    Formula (per block): ``sum(linear weights + biases) + norms·h (+ 2·head_dim with q/k norm)``;
    model: ``V·h`` embedding, ``+ V·h`` head unless tied, ``+ L·block + h`` final norm.
    """
    per_norm = arch.rules.norms_per_layer * arch.hidden_size + (2 * arch.head_dim if arch.rules.qk_norm else 0)
    return ParamCounts(
        embedding=arch.vocab_size * arch.hidden_size,
        lm_head=0 if arch.tie_word_embeddings else arch.vocab_size * arch.hidden_size,
        per_layer_linear=sum(lin.numel for lin in arch.layer_linears()),
        per_layer_norm=per_norm,
        final_norm=arch.hidden_size,
        layers=arch.num_hidden_layers,
    )


def _need(cfg: dict[str, Any], key: str, source: str) -> Any:
    if key not in cfg:
        raise ConfigError(f"{source}: config has no '{key}', so its memory cannot be planned (is it a decoder LM?)")
    return cfg[key]


def architecture_from_config(cfg: dict[str, Any], source: str = "config.json", name: str = "") -> Architecture:
    """Build an :class:`Architecture` from ``config.json`` fields (multimodal configs: ``text_config``).

    Raises:
        ConfigError: a required field is missing or the family is unknown.
    """
    if "text_config" in cfg and "hidden_size" not in cfg:
        cfg = {**cfg["text_config"], "model_type": cfg.get("model_type", "")}
    model_type = str(cfg.get("model_type", "llama"))
    if model_type not in FAMILY_RULES:
        raise ConfigError(
            f"{source}: model_type '{model_type}' is not a family the planner knows. "
            f"Known: {', '.join(sorted(FAMILY_RULES))}"
        )
    hidden = int(_need(cfg, "hidden_size", source))
    heads = int(_need(cfg, "num_attention_heads", source))
    return Architecture(
        model_type=model_type,
        hidden_size=hidden,
        intermediate_size=int(_need(cfg, "intermediate_size", source)),
        num_hidden_layers=int(_need(cfg, "num_hidden_layers", source)),
        num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        vocab_size=int(_need(cfg, "vocab_size", source)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", FAMILY_RULES[model_type].tie_default)),
        attention_bias=bool(cfg.get("attention_bias", False)),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        num_experts=int(cfg.get("num_local_experts") or 0),
        experts_per_token=int(cfg.get("num_experts_per_tok") or 0),
        max_position_embeddings=int(cfg.get("max_position_embeddings") or 0),
        name=name,
        rules=FAMILY_RULES[model_type],
    )
