"""GGUF export: metadata, the RoPE permutation, and read-back through transformers' GGUF loader.

Tolerances, and why: an f16 GGUF stores exactly the fp16-rounded 2-D weights (norms stay f32),
so reading it back must give *the same numbers* as the merged model with its 2-D weights cast to
fp16 and back: checked to 1e-5 (fp32 arithmetic only). Against the unrounded merged model the
difference is the fp16 rounding of the weights (relative 2^-11 ≈ 4.9e-4 per weight); on tiny we
measure a max |Δlogit| ≈ 6e-4 and bound it by 5e-3. Quantized files are checked exactly at the
weight level (read-back == gguf's own dequantize(quantize(w))), and at the output level by the
argmax invariant: with |Δlogit| ≤ ε everywhere, the greedy token can only change where the top-2
margin is below 2ε.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

IDS = torch.tensor([[1, 5, 9, 100, 200, 300, 2, 7, 42, 77, 13, 250]])


def _gguf_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def _hf_model(folder, round_fp16: bool = False):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    if round_fp16:
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 2:
                    p.copy_(p.half().float())
    return model


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


def _greedy(model, prompt, n=24):
    with torch.no_grad():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                             max_new_tokens=n, eos_token_id=None, pad_token_id=3)
    return out[0, prompt.shape[1]:].tolist()


def test_f16_reads_back_as_fp16_rounded_merged_model(gguf_exports, hf_export):
    gguf = _gguf_model(gguf_exports["f16"])
    got = _logits(gguf)
    assert torch.allclose(got, _logits(_hf_model(hf_export, round_fp16=True)), atol=1e-5, rtol=0)
    merged = _hf_model(hf_export)
    assert (got - _logits(merged)).abs().max() < 5e-3
    prompt = IDS[:, :6]
    assert _greedy(gguf, prompt) == _greedy(merged, prompt)


def test_metadata_and_tokenizer(gguf_exports, hf_export, tiny_tokenizer):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    reader = GGUFReader(str(gguf_exports["f16"]))
    field = lambda key: reader.fields[key].contents()  # noqa: E731 - local shorthand
    assert field("general.architecture") == "llama"
    assert (field("llama.attention.head_count"), field("llama.attention.head_count_kv")) == (4, 2)
    shape = ("llama.block_count", "llama.embedding_length", "llama.rope.dimension_count")
    assert tuple(field(k) for k in shape) == (4, 64, 16)
    # llama.cpp ids (llama-vocab.cpp): tokenizer model "gpt2", pre-tokenizer "gpt-2" (an unknown id is refused)
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    assert field("tokenizer.ggml.eos_token_id") == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert field("tokenizer.chat_template") == tiny_tokenizer.chat_template
    names = {t.name for t in reader.tensors}
    assert "output.weight" not in names and {"token_embd.weight", "blk.3.attn_q.weight", "output_norm.weight"} <= names
    read = AutoTokenizer.from_pretrained(gguf_exports["f16"].parent, gguf_file=gguf_exports["f16"].name)
    text = "Hello, world! 12345 <|im_start|>user\nhi<|im_end|>"
    assert read(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]


def test_rope_permutation_is_inverted_by_transformers_loader():
    """Our permutation followed by transformers' reverse permutation is the identity (q: 4 heads, k: GQA 2)."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from tunelab.export.gguf_export import permute_rope

    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(64, 64)), rng.normal(size=(32, 64))
    proc = LlamaTensorProcessor({"num_attention_heads": 4, "num_key_value_heads": 2})
    assert np.array_equal(proc.process(permute_rope(q, 4), "blk.0.attn_q.weight").weights, q)
    assert np.array_equal(proc.process(permute_rope(k, 2), "blk.0.attn_k.weight").weights, k)
    # and it is not the identity itself: rows of one head are interleaved (x0, y0, x1, y1 ...)
    head = np.arange(16)[:, None] * np.ones((1, 2))
    assert permute_rope(head, 1)[:4, 0].tolist() == [0, 8, 1, 9]


@pytest.mark.parametrize("quant", ["q8_0", "q4_0"])
def test_quantized_weights_are_exact_dequantized_blocks(gguf_exports, hf_export, quant):
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize, quantize

    from tunelab.export.gguf_export import permute_rope

    reader = GGUFReader(str(gguf_exports[quant]))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    expected_weights = {"q8_0": "Q8_0", "q4_0": "Q4_0"}[quant]
    assert types["blk.0.ffn_up.weight"] == expected_weights and types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32"
    merged = _hf_model(hf_export)
    gguf = _gguf_model(gguf_exports[quant])
    w = merged.model.layers[1].self_attn.q_proj.weight.detach().numpy()
    qtype = GGMLQuantizationType[expected_weights]
    roundtrip = dequantize(quantize(permute_rope(w, 4), qtype), qtype)
    # undo the permutation the way the loader does, then compare with what it loaded
    unpermuted = roundtrip.reshape(4, 8, 2, 64).swapaxes(2, 1).reshape(64, 64)
    assert np.array_equal(gguf.model.layers[1].self_attn.q_proj.weight.detach().numpy(), unpermuted)


@pytest.mark.parametrize("quant", ["q8_0", "q4_0"])
def test_quantized_greedy_tokens_follow_the_margin_invariant(gguf_exports, hf_export, quant):
    merged, gguf = _logits(_hf_model(hf_export)), _logits(_gguf_model(gguf_exports[quant]))
    eps = float((merged - gguf).abs().max())
    top2 = merged.topk(2, dim=-1).values
    safe = (top2[:, 0] - top2[:, 1]) > 2 * eps
    assert torch.equal(merged.argmax(-1)[safe], gguf.argmax(-1)[safe])
    if quant == "q8_0":  # measured on tiny: ~0.03 for q8_0 (vs ~0.3 for q4_0)
        assert eps < 0.1


def test_unsupported_architecture_is_refused(hf_export):
    from types import SimpleNamespace

    from tunelab.errors import ModelError
    from tunelab.export.gguf_export import _arch

    with pytest.raises(ModelError, match="GGUF export supports"):
        _arch(SimpleNamespace(model_type="gpt2"))


def test_llama_cpp_runs_the_f16_file_like_the_merged_model(gguf_exports, hf_export):
    """llama.cpp itself (llama-cpp-python, optional) loads the file — metadata it does not know, such as
    a pre-tokenizer id, makes it refuse — and computes the merged model's logits up to fp16 weight
    rounding plus llama.cpp's own f16 arithmetic (measured 1.2e-3 on tiny; bound 2e-2)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(gguf_exports["f16"]), n_ctx=64, verbose=False, logits_all=True)
    ids = IDS[0].tolist()
    llm.eval(ids)
    got = torch.from_numpy(np.array(llm.scores[: len(ids)])).float()
    merged = _hf_model(hf_export)
    assert (got - _logits(merged)).abs().max() < 2e-2
    prompt = IDS[:, :6]
    llm.reset()
    tokens = []
    for token in llm.generate(prompt[0].tolist(), temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        tokens.append(int(token))
        if len(tokens) == 24:
            break
    assert tokens == _greedy(merged, prompt)
