"""Activation memory of Llama-style decoder blocks: an inventory of the tensors autograd saves.

Method: follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", arXiv:2205.05198, §4), who count, op by op, the tensors a transformer
block keeps for backward (``s·b·h·(34 + 5·a·s/h)`` bytes for GPT-3 blocks), and redo the count
for the block tunelab trains — Hugging Face's Llama block (RMSNorm, RoPE, grouped-query
attention, SwiGLU MLP) under PyTorch autograd — with the facts that change it:

* autograd saves an op's input only when a gradient needs it: a *frozen* linear keeps its
  weight, not its input; a trained one keeps its input;
* under autocast with fp32 weights every linear casts its input to 16 bits *separately*, and
  the cast copy is what is saved (q, k and v each keep one); the fp32 residual stream is
  saved by the RMSNorm (``x.pow(2)``), which computes in fp32 whatever the dtype;
* peft's LoRA dropout keeps a mask plus its output (cast to 16 bits under autocast); folded into
  ``lora_A`` (``lean``, tunelab/train/lora_dropout.py) it keeps only a seed;
  DoRA also keeps the base and LoRA outputs, which its magnitude multiplies;
* attention: SDPA / flash keep q, k, v (K/V at their GQA size), the output and a fp32
  log-sum-exp per head; eager attention repeats K/V to every query head and also keeps the
  ``B·H·T²`` fp32 probabilities and their 16-bit copy;
* the lowest block that needs gradients gets an input that does not (unless the embeddings
  or a soft prompt are trained): its input norm keeps nothing, LoRA dropout keeps no mask,
  and with frozen q/k/v the attention core keeps nothing either;
* the MLP keeps gate, SiLU(gate) and up (each ``B·T·i``);
* gradient checkpointing (per block, non-reentrant) keeps each block's input and recomputes
  one block at a time in backward.

Every function returns bytes *per token* (or per row for the ``T²`` terms) so that the
formula is visible; :func:`activation_bytes` multiplies by batch and sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.errors import ConfigError
from tunelab.memory.arch import Architecture
from tunelab.memory.trainable import Trainable

ATTENTION_IMPLS = ("sdpa", "flash_attention_2", "eager")


@dataclass(frozen=True)
class ActivationSetup:
    """What decides the saved tensors of one forward pass.

    Attributes:
        compute_bytes: bytes of matmul outputs (2 under bf16/fp16 autocast or pure 16-bit, 4 in fp32).
        residual_bytes: bytes of the residual stream (4 with fp32 weights, 2 in pure 16-bit).
        autocast: weights are fp32 and matmuls run in 16 bits (inputs are cast per linear).
        attention: ``sdpa`` | ``flash_attention_2`` | ``eager``.
        masked: an attention mask is passed (packing with position ids, or padding).
        lora_rank: LoRA rank (for the rank-sized LoRA intermediates).
        lora_dropout: LoRA dropout is active (> 0).
        adapter_bytes: bytes of adapter weights (peft keeps them in fp32).
        device: ``cuda`` or ``cpu`` (dropout masks are 1 byte on CUDA, the input dtype on CPU).
    """

    arch: Architecture
    trainable: Trainable
    compute_bytes: float = 2
    residual_bytes: float = 4
    autocast: bool = True
    attention: str = "sdpa"
    masked: bool = True
    lora_rank: int = 8
    lora_dropout: bool = True
    adapter_bytes: float = 4
    device: str = "cuda"
    lean: bool = False  # tunelab/train/activations.py: LoRA dropout folded into lora_A, fused SwiGLU + LoRA down

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_IMPLS:
            raise ConfigError(f"--attn: unknown attention '{self.attention}'. Valid: {', '.join(ATTENTION_IMPLS)}")


def lora_input_bytes(setup: ActivationSetup, width: int) -> float:
    """Bytes/token one LoRA target keeps of its input.

    peft first casts the input to the adapter dtype (fp32), then applies dropout, which keeps a
    mask: 1 byte/element with CUDA's fused kernel, the input dtype on CPU (``x * noise``).
    ``lora_A`` then keeps its input: the 16-bit cast under autocast (``c·w``), else the fp32
    tensor (``4·w``) — which is the layer input itself when that is already fp32 and there is
    no dropout (returned as 0 here; the caller counts the shared input once).
    """
    a_b = setup.adapter_bytes
    total = 0.0
    if setup.lora_dropout:
        total += (1 if setup.device == "cuda" else a_b) * width
    if setup.autocast:
        total += setup.compute_bytes * width
    elif setup.lora_dropout:
        total += a_b * width
    return total


def linear_group_bytes(
    setup: ActivationSetup, width: int, names: tuple[str, ...], in_bytes: float, already_saved: bool = False
) -> float:
    """Bytes/token kept by the linears ``names`` that read the same input of ``width`` features.

    A trained weight needs its input: a 16-bit cast copy per linear when autocast must cast
    (``c·w`` each), else the shared input once (``in_bytes·w``). A LoRA target keeps what
    :func:`lora_input_bytes` says plus ``A x`` (``c·r``); DoRA also keeps the base and LoRA
    outputs that its magnitude multiplies (``2·c·out``).
    """
    c = setup.compute_bytes
    cast = setup.autocast and in_bytes != c
    t = setup.trainable
    outputs = {lin.name: lin.out_features for lin in setup.arch.layer_linears()}
    total, shared = 0.0, False
    for name in names:
        if t.base_trained:
            if cast:
                total += c * width
            else:
                shared = True
        if name in t.lora_targets:
            kept = lora_input_bytes(setup, width)
            if setup.lean and setup.lora_dropout and not t.dora:  # the mask's seed and the adapter-dtype input:
                shared = shared or in_bytes == setup.adapter_bytes  # the layer input itself, once per group,
                kept = 0 if in_bytes == setup.adapter_bytes else setup.adapter_bytes * width  # or a cast
            elif kept == 0:  # fp32 input, no dropout, no autocast: lora_A keeps the input itself
                shared = shared or in_bytes == setup.adapter_bytes
                kept = 0 if in_bytes == setup.adapter_bytes else setup.adapter_bytes * width
            total += kept + (c if setup.autocast else setup.adapter_bytes) * setup.lora_rank
            if t.dora:
                total += 2 * c * outputs[name]
    if shared and not already_saved:
        total += in_bytes * width
    return total


def norm_bytes(setup: ActivationSetup) -> float:
    """RMSNorm: fp32 input (``4·h``; the residual itself when it is fp32) + rsqrt (4) + normed input if trained."""
    h = setup.arch.hidden_size
    return 4 * h + 4 + (setup.residual_bytes * h if setup.trainable.base_trained else 0)


def attention_bytes(setup: ActivationSetup) -> float:
    """Attention core per token: q (``c·q``), k and v (``c·kv`` each, ``c·q`` if heads are repeated),
    output ``c·q`` and log-sum-exp ``4·H`` (SDPA/flash); eager keeps its ``T²`` terms instead (per row)."""
    a, c = setup.arch, setup.compute_bytes
    repeat = setup.attention == "eager"  # SDPA keeps native GQA (transformers 5 on torch >= 2.5)
    kv = a.q_dim if repeat and a.kv_dim != a.q_dim else a.kv_dim
    total = c * a.q_dim + 2 * c * kv
    if setup.attention != "eager":
        total += c * a.q_dim + 4 * a.num_attention_heads
    if setup.trainable.adapter_attention_len:  # LLaMA-Adapter: scores over the adaption prompt
        total += (4 + c) * a.num_attention_heads * setup.trainable.adapter_attention_len + c * a.q_dim
    return total


def attention_quadratic_bytes(setup: ActivationSetup, seq: int) -> float:
    """Per row and layer: eager attention keeps fp32 probabilities and their copy, ``H·T²·(4 + c)``;
    prefix tuning keeps its ``P`` prefix keys and values concatenated in front (``2·c·kv·P``)."""
    a, c = setup.arch, setup.compute_bytes
    prefix = 2 * c * a.kv_dim * setup.trainable.prefix_tokens
    if setup.attention != "eager":
        return prefix
    return a.num_attention_heads * seq * seq * (4 + c) + prefix


def mlp_bytes(setup: ActivationSetup) -> float:
    """Gated MLP per token: inputs of gate/up, ``3·c·i`` (gate, SiLU(gate), up), input of down;
    MoE: times the experts each token visits, plus fp32 router scores."""
    a, c, r = setup.arch, setup.compute_bytes, setup.residual_bytes
    h, i = a.hidden_size, a.intermediate_size
    per_expert = 3 * c * i + linear_group_bytes(setup, i, ("down_proj",), c)
    if _fused_swiglu(setup):  # gate and up only, and A h for the LoRA down_proj (its dropout mask is redrawn)
        per_expert = 2 * c * i + c * setup.lora_rank
    if not a.num_experts:
        return linear_group_bytes(setup, h, ("gate_proj", "up_proj"), r) + per_expert
    k = a.experts_per_token
    routed_input = k * (r * h + linear_group_bytes(setup, h, ("gate_proj", "up_proj"), r, already_saved=True))
    return routed_input + k * per_expert + 8 * a.num_experts


def _fused_swiglu(setup: ActivationSetup) -> bool:
    """tunelab/train/lean_mlp.py runs: a dense MLP whose frozen ``down_proj`` carries plain LoRA."""
    t = setup.trainable
    return (
        setup.lean
        and not setup.arch.num_experts
        and "down_proj" in t.lora_targets
        and not t.base_trained
        and not t.dora
    )


def layer_bytes(setup: ActivationSetup) -> float:
    """One block, per token: norms + q/k/v inputs + attention + o input + MLP."""
    a, c = setup.arch, setup.compute_bytes
    o_saved = setup.attention != "eager"  # flash/SDPA output is laid out (B, T, H, d): o_proj reads it as is
    return (
        a.rules.norms_per_layer * norm_bytes(setup)
        + linear_group_bytes(setup, a.hidden_size, ("q_proj", "k_proj", "v_proj"), setup.residual_bytes)
        + attention_bytes(setup)
        + linear_group_bytes(setup, a.q_dim, ("o_proj",), c, already_saved=o_saved)
        + mlp_bytes(setup)
    )


def first_layer_savings(setup: ActivationSetup) -> float:
    """Bytes/token the lowest grad-needing block does *not* keep because its input needs no gradient."""
    t = setup.trainable
    if t.first_input_grad:
        return 0.0
    h = setup.arch.hidden_size
    qkv = ("q_proj", "k_proj", "v_proj")
    lora_qkv = sum(name in t.lora_targets for name in qkv)
    saved = 4 * h + 4
    if setup.lora_dropout and not setup.lean:  # folded dropout keeps its mask whatever the input needs
        saved += lora_qkv * (1 if setup.device == "cuda" else setup.adapter_bytes) * h
    if not t.base_trained and not lora_qkv and not t.prefix_tokens:  # trained prefix K/V need the core
        adapter_part = (4 + setup.compute_bytes) * setup.arch.num_attention_heads * t.adapter_attention_len
        saved += attention_bytes(setup) - (adapter_part + setup.compute_bytes * setup.arch.q_dim if adapter_part else 0)
    return saved


def head_bytes(setup: ActivationSetup) -> float:
    """Final norm, the output head's input if the head is trained, and RoPE cos/sin (per token)."""
    a = setup.arch
    head_input = 0.0
    if setup.trainable.base_trained and setup.trainable.grad_layers == a.num_hidden_layers:
        head_input = (setup.compute_bytes if setup.autocast else setup.residual_bytes) * a.hidden_size
    return norm_bytes(setup) + head_input + 2 * setup.residual_bytes * a.head_dim


def mask_bytes(setup: ActivationSetup, seq: int) -> float:
    """Per row: the ``T × T`` mask built once per forward (bool for SDPA, 16-bit additive for eager)."""
    if setup.attention == "flash_attention_2" or not setup.masked:
        return 0.0
    return seq * seq * (setup.compute_bytes if setup.attention == "eager" else 1)


def checkpoint_bytes(setup: ActivationSetup, batch: int, seq: int) -> float:
    """With gradient checkpointing, the block inputs kept through the step: ``N · G · r · h``."""
    tokens = batch * (seq + setup.trainable.extra_tokens)
    return tokens * setup.trainable.grad_layers * setup.residual_bytes * setup.arch.hidden_size


def recompute_bytes(setup: ActivationSetup, batch: int, seq: int) -> float:
    """With gradient checkpointing, one block's saved tensors rebuilt in backward: ``N · layer + B · (quad + mask)``."""
    seq_total = seq + setup.trainable.extra_tokens
    if setup.trainable.grad_layers == 0:
        return 0.0
    quad = attention_quadratic_bytes(setup, seq_total) + mask_bytes(setup, seq_total)
    return batch * seq_total * layer_bytes(setup) + batch * quad


def partial_checkpoint_bytes(setup: ActivationSetup, batch: int, seq: int, fraction: float) -> float:
    """``training.checkpoint_fraction``: the first ``k = round(fraction · G)`` blocks keep only their
    input (``r·h`` per token); the others keep everything. The peak is at the end of the forward:
    by the time backward recomputes a checkpointed block, the blocks above it have freed theirs."""
    t = setup.trainable
    k = min(t.grad_layers, round(fraction * t.grad_layers))
    if k == 0:
        return activation_bytes(setup, batch, seq)
    if k == t.grad_layers:
        return activation_bytes(setup, batch, seq, checkpointing=True)
    seq_total = seq + t.extra_tokens
    tokens = batch * seq_total
    full = (t.grad_layers - k) * (tokens * layer_bytes(setup) + batch * attention_quadratic_bytes(setup, seq_total))
    kept = k * tokens * setup.residual_bytes * setup.arch.hidden_size
    return full + kept + tokens * head_bytes(setup) + batch * mask_bytes(setup, seq_total)


def activation_bytes(setup: ActivationSetup, batch: int, seq: int, checkpointing: bool = False) -> float:
    """Saved-for-backward bytes of one micro-batch of ``batch`` rows × ``seq`` tokens.

    Without checkpointing: ``N · (G · layer + head) + B · G · quadratic + B · mask`` with
    ``N = B · (T + virtual tokens)`` and ``G`` the blocks that need gradients.
    With checkpointing: ``N · (G · r · h + layer + head) + B · (quadratic + mask)`` — every block's
    input (:func:`checkpoint_bytes`) plus one block recomputed at a time.
    """
    t = setup.trainable
    seq_total = seq + t.extra_tokens
    tokens = batch * seq_total
    grad_layers = t.grad_layers
    if grad_layers == 0:
        return 0.0
    per_row = mask_bytes(setup, seq_total)
    quad = attention_quadratic_bytes(setup, seq_total)
    if checkpointing:
        return checkpoint_bytes(setup, batch, seq) + recompute_bytes(setup, batch, seq) + tokens * head_bytes(setup)
    blocks = grad_layers * layer_bytes(setup) - first_layer_savings(setup)
    return tokens * (blocks + head_bytes(setup)) + batch * (grad_layers * quad + per_row)


def quantized_input_bytes(setup: ActivationSetup, head_quantized: bool = False) -> float:
    """Per token: inputs that bitsandbytes < 0.45 keeps for every 4-bit linear whose input needs a gradient.

    Its ``MatMul4Bit`` stored ``ctx.tensors = (A, B)`` although backward never reads ``A`` (a
    frozen bf16 ``nn.Linear`` keeps only its weight). Per block the distinct inputs are the
    attention input (shared by q/k/v), the o_proj input, the MLP input (shared by gate/up) and
    the down_proj input, ``c · (h + q + h + i)``; the lowest block's q/k/v input needs no
    gradient; a quantized head adds its input ``c · h``. bitsandbytes 0.45+ stores ``(None, B)``.
    """
    a, c, t = setup.arch, setup.compute_bytes, setup.trainable
    per_block = c * (2 * a.hidden_size + a.q_dim + a.intermediate_size)
    first = 0 if t.first_input_grad else c * a.hidden_size
    return t.grad_layers * per_block - first + (c * a.hidden_size if head_quantized else 0)


#: Logits per chunk of the recomputed loss: tunelab/methods/lm_loss.py CHUNK_ELEMENTS (a test checks they agree).
LOSS_CHUNK_ELEMENTS = 2**25


def logits_bytes(vocab: int, tokens: int, compute_bytes: float, loss: str = "full", hidden: int = 0) -> float:
    """Output head and loss.

    ``full`` (transformers, peft, TRL): 16-bit logits + fp32 copy + fp32 log-softmax in forward
    (``c + 8``), then the fp32 log-softmax, its gradient and the input gradient in backward
    (``12``): the peak is ``tokens · V · max(c + 8, 12)``. ``chunked``: a compiled loss that
    upcasts one chunk at a time (torchtune's ``CEWithChunkedOutputLoss``) keeps only the 16-bit
    logits, ``tokens · V · c``. ``recomputed`` (tunelab's own, tunelab/methods/lm_loss.py): no
    logits are kept; backward needs the scored rows' hidden states (a copy, ``c · h``) and one
    fp32 log-sum-exp per row, and one chunk of ``C`` logits is alive at a time (16-bit, fp32
    copy, fp32 softmax gradient): ``tokens · (c · h + 4) + min(tokens · V, C) · (c + 8)``. Every
    token is counted as scored (an upper bound: prompt tokens never reach the head).
    """
    if loss == "chunked":
        return tokens * vocab * compute_bytes
    if loss == "recomputed":
        return tokens * (compute_bytes * hidden + 4) + min(tokens * vocab, LOSS_CHUNK_ELEMENTS) * (compute_bytes + 8)
    if loss != "full":
        raise ConfigError(f"loss: unknown '{loss}'. Valid: full, chunked, recomputed")
    return tokens * vocab * max(compute_bytes + 8, 12)
