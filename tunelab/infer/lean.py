"""A lean decode state for small Llama-family drafts: plain tensor ops, fused weights, a growing KV buffer.

Why: a draft runs one tiny forward per drafted token. For a 4-layer draft of a 135M model the
arithmetic is a few milliseconds on a CPU, and transformers' per-call machinery (cache objects,
mask construction, output classes, hooks, kwargs plumbing) costs about as much again. This state
does the same computation as ``LlamaForCausalLM`` (RMSNorm, rotary embeddings from the model's
own rotary module, grouped-query attention, SwiGLU MLP) with q/k/v and gate/up fused into one
matrix each and the keys/values written into preallocated buffers. Per layer it makes as few
kernel calls as it can: one fused RMSNorm each (``F.rms_norm``), linear layers called as
``F.linear`` on their weights (no ``nn.Module`` call), the rotary embedding applied to the
queries and keys in one pass, and a one-token step's attention as two small matmuls over the
grouped heads (torch's CPU flash-attention kernel costs ~80 us per call at this size, the matmuls
a fraction). At batch 1 a step is memory-bound: every weight is read once, and what is left is
this per-layer overhead, which ``bench/prune.py`` shows is what keeps a narrower MLP from
saving time in full proportion to its parameters. Drafts decode with it (they need not be
bit-exact; they are checked to match transformers' logits closely in ``tests/infer/test_lean.py``);
a target does only when asked (``tunelab serve --lean``, ``Generator(lean=True)``): by default it
runs through transformers, whose logits are the reference the rest of tunelab is tested against.

It offers :class:`tunelab.infer.cache.KVState`'s interface (``logits(tokens, last)`` reusing the
longest cached prefix, ``forward_passes``), and :func:`lean_state` falls back to ``KVState`` for
any model it does not cover (other architectures, biases, adapters with virtual tokens, non-CPU).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunelab.infer.cache import KVState, common_prefix_len


def supported(model) -> bool:
    """Whether :class:`LeanState` reproduces ``model``: a plain Llama-architecture causal LM on the CPU."""
    config = getattr(model, "config", None)
    base = getattr(model, "model", None)
    if config is None or base is None or getattr(config, "model_type", None) != "llama":
        return False
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return False
    if getattr(config, "hidden_act", "silu") != "silu" or not hasattr(base, "rotary_emb"):
        return False
    return next(model.parameters()).device.type == "cpu"


def _fuse(*linears: nn.Module) -> nn.Linear:
    weight = torch.cat([m.weight.detach() for m in linears])
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    fused.weight = nn.Parameter(weight, requires_grad=False)
    return fused


def _caller(module: nn.Module):
    """``module`` as a plain function: a bias-free ``nn.Linear`` as ``F.linear`` on its weight (an
    ``nn.Module`` call costs a few microseconds of hooks bookkeeping, ~4 per layer per step); any
    other module (int8, a restricted head) as itself."""
    if type(module) is nn.Linear and module.bias is None:
        weight = module.weight.detach()
        return lambda x: F.linear(x, weight)
    return module


# model -> {(quantize, head id): (layers, head)}; outside the module so that copying a model works
_BUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fused_blocks(model, quantize: str) -> tuple[list[dict[str, Callable[[Tensor], Tensor]]], nn.Module]:
    """``(layers, head)``: each decoder layer's linears fused (q/k/v, gate/up), int8 if asked, as callables
    (:func:`_caller`: made once per model here, not per request)."""
    blocks = nn.ModuleDict({"head": model.get_output_embeddings(), "layers": nn.ModuleList()})
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        fused = {
            "qkv": _fuse(attn.q_proj, attn.k_proj, attn.v_proj),
            "o": _fuse(attn.o_proj),
            "gate_up": _fuse(mlp.gate_proj, mlp.up_proj),
            "down": _fuse(mlp.down_proj),
        }
        blocks["layers"].append(nn.ModuleDict(fused))
    if quantize == "int8":
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # deprecated in favour of torchao, still shipped with torch
            warnings.simplefilter("ignore")
            blocks = quantize_dynamic(blocks, {nn.Linear}, dtype=torch.qint8)
    return [{name: _caller(linear) for name, linear in layer.items()} for layer in blocks["layers"]], blocks["head"]


class LeanState:
    """A draft's KV cache and forward pass without transformers' per-call overhead (Llama family).

    Args:
        model: a ``LlamaForCausalLM`` (its output head may be restricted by
            :func:`tunelab.infer.drafting.restrict_head`: any module mapping hidden states to logits).
        quantize: "int8" quantizes the fused linear layers and the head dynamically (a copy; the model is kept).
    """

    def __init__(self, model, quantize: str = "none"):
        config = model.config
        base = model.model
        self.model = model
        self.eps = config.rms_norm_eps
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.embed = base.embed_tokens.weight.detach()
        self.norm = base.norm.weight.detach()
        self.rotary = base.rotary_emb
        self.norms = [
            (x.input_layernorm.weight.detach(), x.post_attention_layernorm.weight.detach()) for x in base.layers
        ]
        built = _BUILT.setdefault(model, {})  # fused (and quantized) once per model, not per request
        key = (quantize, id(model.get_output_embeddings()))
        if key not in built:
            built[key] = _fused_blocks(model, quantize)
        self.blocks, self.head = built[key]
        self._head = _caller(self.head)
        self.tokens: list[int] = []
        self.forward_passes = 0
        self.device = self.embed.device
        self._cos = self._sin = None
        self.keys: Tensor | None = None  # (layers, kv_heads, capacity, head_dim)
        self.values: Tensor | None = None

    def _grow(self, length: int) -> None:
        capacity = 0 if self.keys is None else self.keys.shape[2]
        if length <= capacity:
            return
        size = max(256, capacity * 2, length)
        shape = (len(self.blocks), self.kv_heads, size, self.head_dim)
        keys, values = self.embed.new_zeros(shape), self.embed.new_zeros(shape)
        if self.keys is not None:
            keys[:, :, :capacity] = self.keys
            values[:, :, :capacity] = self.values
        self.keys, self.values = keys, values
        positions = torch.arange(size, device=self.device)[None]
        cos, sin = self.rotary(self.embed[None, :1], positions)  # the model's own rotary (scaling included)
        self._cos, self._sin = cos[0], sin[0]

    def _rms(self, x: Tensor, weight: Tensor) -> Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, weight.shape, weight, self.eps)
        # In half precision as LlamaRMSNorm does it: normalize in fp32, round, then scale.
        return weight * F.rms_norm(x.float(), weight.shape, None, self.eps).to(x.dtype)

    def _rope(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    @torch.inference_mode()
    def logits(self, tokens: Sequence[int], last: int = 1) -> Tensor:
        """Float logits ``(last, V)`` after each of the final ``last`` positions (as ``KVState.logits``)."""
        if not 1 <= last <= len(tokens):
            raise ValueError(f"need 1 <= last <= len(tokens), got last={last}, len={len(tokens)}")
        self.forward_passes += 1
        start = min(common_prefix_len(self.tokens, tokens), len(tokens) - last)
        end = len(tokens)
        self._grow(end)
        new = torch.tensor(list(tokens[start:]), device=self.device)
        n = end - start
        h = self.embed[new]  # (n, hidden)
        cos, sin = self._cos[start:end][None], self._sin[start:end][None]  # (1, n, head_dim)
        mask = None
        if n > 1:  # causal within the new tokens; every cached position is visible
            mask = torch.arange(end, device=self.device)[None] <= torch.arange(start, end, device=self.device)[:, None]
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        for i, (block, (norm1, norm2)) in enumerate(zip(self.blocks, self.norms, strict=True)):
            qkv = block["qkv"](self._rms(h, norm1))
            qk = self._rope(qkv[:, : (heads + kv_heads) * dim].view(n, heads + kv_heads, dim).transpose(0, 1), cos, sin)
            self.keys[i, :, start:end] = qk[heads:]
            self.values[i, :, start:end] = qkv[:, (heads + kv_heads) * dim :].view(n, kv_heads, dim).transpose(0, 1)
            keys, values = self.keys[i, :, :end], self.values[i, :, :end]
            if n == 1:  # one query per head: grouped matmuls, (kv_heads, group, positions), in fp32 as SDPA's
                query = qk[:heads].view(kv_heads, heads // kv_heads, dim).float() * dim**-0.5
                scores = query @ keys.float().transpose(1, 2)
                out = (scores.softmax(-1) @ values.float()).to(h.dtype).view(1, heads * dim)
            else:
                out = F.scaled_dot_product_attention(
                    qk[None, :heads], keys[None], values[None], attn_mask=mask, enable_gqa=True
                )
                out = out[0].transpose(0, 1).reshape(n, -1)
            h = h + block["o"](out)
            gate, up = block["gate_up"](self._rms(h, norm2)).chunk(2, dim=-1)
            h = h + block["down"](F.silu(gate) * up)
        self.tokens = list(tokens)
        return self._head(self._rms(h[-last:], self.norm)).float()


def lean_state(model, quantize: str = "none") -> LeanState | KVState:
    """A :class:`LeanState` for ``model`` when :func:`supported`, else a :class:`KVState` (quantized as asked)."""
    if supported(model):
        return LeanState(model, quantize)
    if quantize == "int8":
        from tunelab.infer.drafting import quantize_int8

        model = quantize_int8(model)
    return KVState(model)
