"""Model FLOPs of a training step and the model FLOPs utilisation (MFU) of a run.

MFU (Chowdhery et al., 2022, "PaLM", arXiv:2204.02311, appendix B) is the FLOP/s the *model*
needs (not what the hardware ran: recomputation under gradient checkpointing does not count)
divided by the device's peak FLOP/s. Here the peak is the measured matmul GFLOP/s of the dtype
the run computes in (:attr:`tunelab.models.precision.PrecisionChoice.peak_gflops`), so an MFU
of 0.5 means half the speed this device reaches on one large matmul in that dtype.

Counting, per processed (non-padding) token, with ``N`` the weights of every matrix multiply
(each ``nn.Linear``: the decoder's projections, the LM head, LoRA's A and B; not the embedding
lookup) and ``N_t`` the trained ones among them (Kaplan et al., 2020, arXiv:2001.08361, sec.
2.1; Hoffmann et al., 2022, "Chinchilla", arXiv:2203.15556, appendix F):

* forward: ``2·N`` (a multiply and an add per weight);
* backward, activation gradients: ``2·N``. Needed through every layer above the first
  trained weight; with LoRA on all linears or full fine-tuning that is every layer, and a
  frozen base still pays it;
* backward, weight gradients: ``2·N_t``. Full fine-tuning: ``N_t = N``, the usual ``6·N``;
  LoRA: ``N_t`` is the adapters', so a step costs ~``4·N`` per token.

Attention's score and value products have no weights; PaLM counts them as ``12·L·H·Q·T`` per
token for a training step (forward ``4·L·H·Q·T``, backward twice that; ``L`` layers, ``H·Q``
the attention width, ``T`` the sequence length, without halving for the causal mask). With
packed or variable-length rows ``T`` is each example's own length, so a step adds
``12·L·H·Q·Σ s²`` over its examples' lengths ``s``.

A frozen forward (DPO's reference computed on the fly) adds ``2·N`` per token plus
``4·L·H·Q·Σ s²``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class FlopsModel:
    """The sizes the FLOP count needs, read once from the model."""

    matmul_params: int  #: N: weights of every nn.Linear (LM head and adapters included)
    trained_params: int  #: N_t: those with requires_grad
    layers: int  #: L
    attention_width: int  #: H·Q (query heads x head dim)

    @classmethod
    def of(cls, model: nn.Module) -> FlopsModel:
        """Read N, N_t, L and H·Q from a transformers model (peft-wrapped or not)."""
        n, trained = 0, 0
        for module in model.modules():
            if isinstance(module, nn.Linear):
                # in x out, not weight.numel(): a 4-bit weight is stored packed (fewer elements).
                size = module.in_features * module.out_features
                n += size
                trained += size if module.weight.requires_grad else 0
        config = _text_config(model)
        layers = int(getattr(config, "num_hidden_layers", 0) or 0)
        heads = int(getattr(config, "num_attention_heads", 0) or 0)
        head_dim = getattr(config, "head_dim", None) or (
            int(getattr(config, "hidden_size", 0) or 0) // max(heads, 1)
        )
        return cls(n, trained, layers, heads * int(head_dim))

    def step_flops(self, lengths: Sequence[int], frozen_forward_lengths: Sequence[int] = ()) -> float:
        """Model FLOPs of training on examples of ``lengths`` tokens (and of frozen forwards).

        Args:
            lengths: non-padding length of each example trained on this step (a packed row
                contributes one entry per example).
            frozen_forward_lengths: examples that also ran a forward without gradients.
        """
        tokens, squares = sum(lengths), sum(s * s for s in lengths)
        attn = self.layers * self.attention_width
        train = (4 * self.matmul_params + 2 * self.trained_params) * tokens + 12 * attn * squares
        f_tokens, f_squares = sum(frozen_forward_lengths), sum(s * s for s in frozen_forward_lengths)
        frozen = 2 * self.matmul_params * f_tokens + 4 * attn * f_squares
        return float(train + frozen)


def _text_config(model: nn.Module):
    config = getattr(model, "config", None)
    if config is None and hasattr(model, "get_base_model"):
        config = model.get_base_model().config
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return config


def mfu(flops: float, seconds: float, peak_gflops: float) -> float:
    """Achieved model FLOP/s over the device peak; 0 when the peak is unknown."""
    if peak_gflops <= 0 or seconds <= 0:
        return 0.0
    return flops / seconds / (peak_gflops * 1e9)
