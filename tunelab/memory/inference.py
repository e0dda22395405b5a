"""Inference memory: weights in any format, KV cache, prefill activations, logits, overhead.

Prefill runs the prompt through one block at a time without keeping anything for backward,
so its activation peak is the largest set of tensors alive *inside* one block: the MLP's
gate, up and their product (``3·c·i`` per token) next to the block input and output
(``2·c·h``); eager attention adds the ``B·H·T²`` scores in fp32 plus a 16-bit copy.
transformers computes logits only for the last position while generating
(``logits_to_keep=1``): ``B · V`` fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.memory.arch import Architecture, count_parameters
from tunelab.memory.estimate import MemoryEstimate
from tunelab.memory.formats import BITS_TO_FORMAT, kv_cache_bytes, weight_bytes, weight_format
from tunelab.memory.training import DEFAULT_OVERHEAD


@dataclass(frozen=True)
class InferSpec:
    """An inference setting: weight format, context, batch, KV dtype, attention kernel."""

    arch: Architecture
    weight_format: str = "bf16"
    context: int = 4096
    batch_size: int = 1
    kv_dtype: str = "bf16"
    attention: str = "sdpa"
    compute_bytes: float = 2
    overhead: float = DEFAULT_OVERHEAD


def prefill_bytes(arch: Architecture, tokens: int, batch: int, seq: int, compute_bytes: float, attention: str) -> float:
    """Peak transient of one block in prefill: ``tokens · c · (3·i + 2·h)`` (+ eager ``B·H·T²·(4 + c)``)."""
    per_token = compute_bytes * (3 * arch.intermediate_size + 2 * arch.hidden_size)
    quadratic = batch * arch.num_attention_heads * seq * seq * (4 + compute_bytes) if attention == "eager" else 0.0
    return tokens * per_token + quadratic


def plan_inference(spec: InferSpec) -> MemoryEstimate:
    """Memory to serve ``spec``: weights + KV cache for the whole context + prefill + last-token logits."""
    fmt = weight_format(spec.weight_format)
    weights = weight_bytes(spec.arch, fmt.name, spec.compute_bytes)
    kv = kv_cache_bytes(spec.arch, spec.context, spec.batch_size, spec.kv_dtype)
    tokens = spec.batch_size * spec.context
    prefill = prefill_bytes(spec.arch, tokens, spec.batch_size, spec.context, spec.compute_bytes, spec.attention)
    logits = spec.batch_size * spec.arch.vocab_size * 4
    return MemoryEstimate(
        weights=weights,
        activations=prefill,
        logits=logits,
        kv_cache=kv,
        overhead=spec.overhead,
        params=count_parameters(spec.arch).total,
        seed_bits=round(fmt.bits) if fmt.bits < 8 else fmt.bits // 1,
        details={
            "weights": f"{fmt.description}: {weights * 8 / count_parameters(spec.arch).total:.2f} bits/param overall",
            "kv_cache": f"2 × {spec.arch.num_hidden_layers} layers × {spec.arch.kv_dim} kv dims × "
            f"{spec.context} ctx × {spec.batch_size} batch × {spec.kv_dtype}",
            "activations": "prefill of the whole context, one block at a time",
            "logits": "last position only, fp32",
        },
        notes=(f"weights {fmt.name}; KV cache {spec.kv_dtype}",),
    )


def format_for_bits(bits: int) -> str:
    """``--bits`` → weight format (4 = NF4 with double quantization, 8 = LLM.int8)."""
    return BITS_TO_FORMAT[bits]
