"""Bytes of weights and KV cache in every storage format the planner knows.

Each format is a registry entry with the *mechanism* of its storage, not a measured size:

* plain dtypes: 4 / 2 bytes per parameter;
* bitsandbytes NF4 (QLoRA, Dettmers et al. 2023, arXiv:2305.14314, §3): 4-bit codes plus one
  fp32 absmax per 64-weight block (0.5 bit/weight), or with *double quantization* an 8-bit
  absmax per block plus one fp32 constant per 256 blocks (8/64 + 32/(64·256) ≈ 0.127 bit);
  only the blocks' linear layers are quantized — embeddings, output head and norms stay in
  the load dtype;
* bitsandbytes LLM.int8 (Dettmers et al. 2022, arXiv:2208.07339): int8 weights plus one fp32
  scale per output row;
* GGUF (llama.cpp): every tensor in blocks; ``q8_0`` = 32 int8 + fp16 scale = 8.5 bpw,
  ``q4_0`` = 4.5 bpw, the k-quants in 256-weight super-blocks (Q4_K 4.5, Q6_K 6.5625 bpw) as
  in ``gguf.GGML_QUANT_SIZES``; ``q4_k_m`` mixes Q4_K with Q6_K for ``attn_v``/``ffn_down``
  of the layers llama.cpp's ``use_more_bits`` picks and for the output head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tunelab.errors import ConfigError
from tunelab.memory.arch import Architecture, count_parameters

NF4_BLOCK = 64
NF4_DQ_BLOCKS = 256  # second-level block: 256 first-level absmax values share one fp32 constant


def nf4_bits_per_weight(double_quant: bool) -> float:
    """bits/weight of bitsandbytes NF4: ``4 + 32/64`` or, double-quantized, ``4 + 8/64 + 32/(64·256)``."""
    if double_quant:
        return 4 + 8 / NF4_BLOCK + 32 / (NF4_BLOCK * NF4_DQ_BLOCKS)
    return 4 + 32 / NF4_BLOCK


def use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's rule for which layers get Q6_K in q4_k_m: the first and last eighth, every third between."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


@dataclass(frozen=True)
class WeightFormat:
    """A way to store a model's weights. ``weight_bytes(arch, dense_bytes)`` gives the total."""

    name: str
    description: str
    bits: float  # nominal bits per quantized weight (constants included), for the seed rule and display
    weight_bytes: Callable[[Architecture, float], float]


def _dense(bytes_per_param: float) -> Callable[[Architecture, float], float]:
    def size(arch: Architecture, other_bytes: float) -> float:
        return count_parameters(arch).total * bytes_per_param

    return size


def _bnb(bits: float) -> Callable[[Architecture, float], float]:
    def size(arch: Architecture, other_bytes: float) -> float:
        counts = count_parameters(arch)
        return counts.linear * bits / 8 + counts.not_quantized * other_bytes

    return size


def _int8(arch: Architecture, other_bytes: float) -> float:
    """LLM.int8: 1 byte per weight + one fp32 scale per output row; biases stay in 16 bits."""
    counts = count_parameters(arch)
    rows = sum(lin.out_features * lin.copies for lin in arch.layer_linears()) * arch.num_hidden_layers
    biases = counts.linear - sum(lin.weight_numel for lin in arch.layer_linears()) * arch.num_hidden_layers
    weights = counts.linear - biases
    return weights + 4 * rows + (biases + counts.not_quantized) * other_bytes


def _gguf(bpw: float) -> Callable[[Architecture, float], float]:
    """Uniform GGUF type on every matrix; 1-D tensors (norms, biases) stay F32 as llama.cpp keeps them."""

    def size(arch: Architecture, other_bytes: float) -> float:
        counts = count_parameters(arch)
        matrices = counts.linear + counts.embedding + counts.lm_head
        vectors = counts.total - matrices
        return matrices * bpw / 8 + vectors * 4

    return size


Q4_K, Q6_K = 4.5, 6.5625
NF4_BITS, NF4_DQ_BITS = nf4_bits_per_weight(False), nf4_bits_per_weight(True)


def _q4_k_m(arch: Architecture, other_bytes: float) -> float:
    """Q4_K everywhere, Q6_K for attn_v and ffn_down in ``use_more_bits`` layers and for the output head."""
    counts = count_parameters(arch)
    linears = {lin.name: lin.weight_numel for lin in arch.layer_linears()}
    total_bits = 0.0
    for layer in range(arch.num_hidden_layers):
        more = use_more_bits(layer, arch.num_hidden_layers)
        for name, numel in linears.items():
            total_bits += numel * (Q6_K if more and name in ("v_proj", "down_proj") else Q4_K)
    head = counts.lm_head or counts.embedding  # a tied head is stored once, as token_embd
    total_bits += counts.embedding * Q4_K + (head * Q6_K if counts.lm_head else 0)
    vectors = counts.total - counts.linear - counts.embedding - counts.lm_head
    biases = counts.linear - sum(linears.values()) * arch.num_hidden_layers
    return total_bits / 8 + (vectors + biases) * 4


WEIGHT_FORMATS: dict[str, WeightFormat] = {
    "fp32": WeightFormat("fp32", "32-bit float", 32, _dense(4)),
    "bf16": WeightFormat("bf16", "bfloat16", 16, _dense(2)),
    "fp16": WeightFormat("fp16", "float16", 16, _dense(2)),
    "int8": WeightFormat("int8", "bitsandbytes LLM.int8 (+ fp32 row scales)", 8, _int8),
    "nf4": WeightFormat("nf4", "bitsandbytes NF4 + fp32 absmax/64", NF4_BITS, _bnb(NF4_BITS)),
    "nf4-dq": WeightFormat("nf4-dq", "bitsandbytes NF4, double-quantized constants", NF4_DQ_BITS, _bnb(NF4_DQ_BITS)),
    "q8_0": WeightFormat("q8_0", "GGUF Q8_0 (32 int8 + fp16 scale)", 8.5, _gguf(8.5)),
    "q4_0": WeightFormat("q4_0", "GGUF Q4_0 (32 × 4 bit + fp16 scale)", 4.5, _gguf(4.5)),
    "q4_k_m": WeightFormat("q4_k_m", "GGUF Q4_K_M (Q4_K + Q6_K mix)", 4.85, _q4_k_m),
}

#: ``--bits N`` for inference means these formats.
BITS_TO_FORMAT = {32: "fp32", 16: "bf16", 8: "int8", 4: "nf4-dq"}

#: KV-cache element sizes in bytes (quantized caches: q8_0/q4_0 blocks as in llama.cpp).
KV_BYTES: dict[str, float] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "q8_0": 8.5 / 8, "q4_0": 4.5 / 8}


def weight_format(name: str) -> WeightFormat:
    if name not in WEIGHT_FORMATS:
        raise ConfigError(f"--quant: unknown weight format '{name}'. Valid: {', '.join(WEIGHT_FORMATS)}")
    return WEIGHT_FORMATS[name]


def weight_bytes(arch: Architecture, fmt: str, other_bytes: float = 2) -> float:
    """Bytes of all weights stored as ``fmt``; ``other_bytes`` = bytes/param of unquantized tensors."""
    return weight_format(fmt).weight_bytes(arch, other_bytes)


def kv_cache_bytes(arch: Architecture, context: int, batch: int, kv_dtype: str = "bf16") -> float:
    """KV cache: ``2 · layers · kv_heads · head_dim · context · batch · bytes`` (K and V of every token)."""
    if kv_dtype not in KV_BYTES:
        raise ConfigError(f"--kv-cache-dtype: unknown '{kv_dtype}'. Valid: {', '.join(KV_BYTES)}")
    return 2 * arch.num_hidden_layers * arch.kv_dim * context * batch * KV_BYTES[kv_dtype]
