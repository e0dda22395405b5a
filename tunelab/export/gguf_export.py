"""Write a merged Llama-family model as a GGUF file with the ``gguf`` package.

Follows llama.cpp's ``convert_hf_to_gguf.py`` for ``LlamaForCausalLM``: llama tensor names
(``token_embd``, ``blk.N.attn_q`` …, ``output_norm``, ``output`` unless tied), hyper-parameters
under ``llama.*``, and the q/k rows permuted from Hugging Face's rotate-half RoPE layout to
llama.cpp's interleaved pairs (the inverse of ``LlamaTensorProcessor._reverse_permute_weights``
in transformers' GGUF loader). The tokenizer goes in as gpt2-style byte-level BPE metadata
(tokens, token types, merges, special ids, ``add_bos_token``) with the chat template, and the
chat template's turn terminator as the end-of-turn id, so llama.cpp and Ollama stop on it.

Quantization uses ``gguf.quants.quantize`` (Q8_0 / Q4_0 blocks of 32, one scale per block);
1-D tensors (norms) stay F32 like llama.cpp, and for q4_0 the embedding/output matrices are
Q8_0 (llama-quantize also keeps those at higher precision because errors there hit every token).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunelab.errors import ModelError
from tunelab.models.merge import MergedRun


@dataclass(frozen=True)
class Quant:
    """One ``--quant`` choice: the type of 2-D weights, of embeddings, and the GGUF file type."""

    weights: str  # GGMLQuantizationType name
    embeddings: str
    file_type: str  # LlamaFileType name


QUANTS: dict[str, Quant] = {
    "f32": Quant("F32", "F32", "ALL_F32"),
    "f16": Quant("F16", "F16", "MOSTLY_F16"),
    "q8_0": Quant("Q8_0", "Q8_0", "MOSTLY_Q8_0"),
    "q4_0": Quant("Q4_0", "Q8_0", "MOSTLY_Q4_0"),
}

#: transformers ``model_type`` → GGUF architecture written (Llama-family: same tensors, same math).
ARCHITECTURES = {"llama": "llama", "mistral": "llama"}

#: tokenizer.json pre-tokenizers → llama.cpp's ``tokenizer.ggml.pre`` (its regex set for the split).
_GPT2_BYTE_LEVEL = {"type": "ByteLevel", "use_regex": True}
_DIGITS_THEN_BYTE_LEVEL = [{"type": "Digits", "individual_digits": True}, _GPT2_BYTE_LEVEL]

# llama.cpp token types (llama_token_type in llama.h / gguf.TokenType).
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


def _matches(spec: dict, node: dict) -> bool:
    return all(node.get(k) == v for k, v in spec.items())


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """The llama.cpp pre-tokenizer id for this tokenizer.json (gpt2 regex, or digits-then-gpt2 = smollm).

    The ids are llama.cpp's (``llama-vocab.cpp``): the GPT-2 split is ``gpt-2`` with a hyphen;
    llama.cpp refuses to load a file with an id it does not know ("unknown pre-tokenizer type").
    """
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if _matches(_GPT2_BYTE_LEVEL, pre):
        return "gpt-2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if len(steps) == 2 and all(_matches(s, n) for s, n in zip(_DIGITS_THEN_BYTE_LEVEL, steps, strict=True)):
        return "smollm"
    raise ModelError(
        f"GGUF export supports byte-level BPE tokenizers with the GPT-2 split (optionally digits first); "
        f"this tokenizer's pre_tokenizer is {json.dumps(pre)[:200]}.\n"
        "  fix: export --format hf and convert with llama.cpp's convert_hf_to_gguf.py"
    )


def _arch(config) -> str:
    arch = ARCHITECTURES.get(config.model_type)
    if arch is None:
        raise ModelError(
            f"GGUF export supports {sorted(ARCHITECTURES)} models; this one is '{config.model_type}'.\n"
            "  fix: export --format hf and convert with llama.cpp's convert_hf_to_gguf.py"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ModelError(f"GGUF export: rope_type={rope.get('rope_type')} is not supported yet (only default RoPE)")
    return arch


def _rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def write_hparams(writer, config, name: str, file_type: str) -> None:
    """``general.*`` and ``llama.*`` keys, the ones llama.cpp and transformers' GGUF loader read."""
    from gguf import LlamaFileType

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if head_dim != config.hidden_size // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(LlamaFileType[file_type])


def write_tokenizer(writer, tokenizer, vocab_size: int, eos_ids: list[int]) -> None:
    """gpt2-style BPE vocabulary, merges, special ids, BOS/EOS flags and the chat template."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    model = data["model"]
    if model.get("type") != "BPE":
        raise ModelError(f"GGUF export supports BPE tokenizers; this one is {model.get('type')}")
    pre = pre_tokenizer_name(data)
    by_id = {i: t for t, i in model["vocab"].items()}
    special = {a["id"]: a for a in data.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in special.items()})
    tokens, types = [], []
    for i in range(vocab_size):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(CONTROL if special.get(i, {}).get("special") else USER_DEFINED if i in special else NORMAL)
        else:  # embedding rows beyond the tokenizer (padded vocabularies)
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(bool(probe) and probe[-1] == tokenizer.eos_token_id and len(probe) > 1)
    writer.add_add_space_prefix(False)
    for setter, value in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, eos_ids[0] if eos_ids else tokenizer.eos_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
    ):
        if value is not None:
            setter(int(value))
    if len(eos_ids) > 1:
        writer.add_eot_token_id(int(eos_ids[-1]))  # the template's turn terminator (see eos_token_ids)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def permute_rope(weights: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half rows → llama.cpp interleaved rows (convert_hf_to_gguf ``LlamaModel.permute``).

    Shape ``(n_head * head_dim, …)``; each head's rows ``[x0..x_{d/2-1}, y0..]`` become ``[x0, y0, x1, y1 …]``.
    """
    shape = weights.shape
    return weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _encode(name: str, data: np.ndarray, quant: Quant) -> tuple[np.ndarray, object]:
    """Cast or quantize one tensor; returns ``(array, raw_dtype or None)``."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if data.ndim == 1:
        return data.astype(np.float32), None
    kind = quant.embeddings if name.startswith(("token_embd", "output.")) else quant.weights
    if kind in ("Q8_0", "Q4_0") and data.shape[-1] % 32:
        kind = "F16"  # rows must be whole 32-value blocks; llama.cpp falls back the same way
    if kind == "F32":
        return data.astype(np.float32), None
    if kind == "F16":
        return data.astype(np.float16), None
    qtype = GGMLQuantizationType[kind]
    return quantize(data.astype(np.float32), qtype), qtype


def gguf_tensors(model, quant: Quant) -> Iterator[tuple[str, np.ndarray, object]]:
    """``(gguf_name, array, raw_dtype)`` for every weight, q/k permuted, tied output skipped."""
    from gguf import MODEL_ARCH, get_tensor_name_map

    config = model.config
    names = get_tensor_name_map(MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        stem, _, suffix = hf_name.rpartition(".")
        gguf_stem = names.get_name(stem)
        if gguf_stem is None:
            raise ModelError(f"GGUF export: no llama.cpp name for tensor '{hf_name}' (unsupported architecture?)")
        data = tensor.detach().to("cpu").float().numpy()
        if stem.endswith("q_proj"):
            data = permute_rope(data, heads)
        elif stem.endswith("k_proj"):
            data = permute_rope(data, kv_heads)
        gguf_name = f"{gguf_stem}.{suffix}"
        array, raw = _encode(gguf_name, data, quant)
        yield gguf_name, array, raw


def write_gguf(merged: MergedRun, path: Path, quant_name: str, name: str) -> None:
    """Write ``merged`` to ``path`` as a GGUF file with ``--quant quant_name``."""
    from gguf import GGUFWriter

    if quant_name not in QUANTS:
        raise ModelError(f"--quant {quant_name}: unknown; choose one of {', '.join(QUANTS)}")
    config = merged.model.config
    arch = _arch(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".gguf.tmp")
    writer = GGUFWriter(tmp, arch)
    write_hparams(writer, config, name, QUANTS[quant_name].file_type)
    write_tokenizer(writer, merged.tokenizer, config.vocab_size, merged.eos_token_ids)
    for gguf_name, array, raw in gguf_tensors(merged.model, QUANTS[quant_name]):
        writer.add_tensor(gguf_name, array, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)  # never leave a half-written .gguf behind
