"""A cheaper output head for the target's speculative verify pass on the CPU, one-token steps untouched.

Why: a CPU decode step reads every weight from memory once. The verify pass of speculative
decoding feeds ``k + 1`` tokens, and PyTorch's default sgemm (MKL) multiplies those few rows by
the 49,152 × 576 output head of a 135M model well below the bandwidth of the one-row product;
oneDNN's linear on a weight converted once to its own layout is faster: on a 2-core AMD EPYC a
verify pass over 5 tokens costs 1.85 target steps with the default head and 1.64 with this one
(``python bench/draft.py --levers``). The decoder layers' few-row products stay on MKL: oneDNN
was not faster there. Greedy speculative output stays the target's: the one-token path (plain
decoding, prefill's last position) still runs ``F.linear`` and the verify pass only ever decides
which drafted tokens equal the target's argmax; the two kernels differ by float rounding (~1e-6),
as the one-row and multi-row sgemm already do, and equality with plain greedy decoding is checked
on every measured prompt by ``tunelab draft``.
"""

from __future__ import annotations

import types
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_ROWS = 16  # verify passes are k + 1 rows; larger products (batched prefill) keep the default kernel
# head -> (its weight, that weight in oneDNN's layout); outside the module so that copying a model works
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(self: nn.Linear, x: Tensor) -> Tensor:
    rows = x.numel() // x.shape[-1]
    if not 1 < rows <= MAX_ROWS or x.dtype != torch.float32:
        return F.linear(x, self.weight, self.bias)
    packed = _PACKED.get(self)
    if packed is None or packed[0] is not self.weight:  # converted once (and again if the weight is replaced)
        packed = _PACKED[self] = (self.weight, self.weight.detach().to_mkldnn())
    out = torch._C._nn.mkldnn_linear(x.reshape(rows, -1).detach().to_mkldnn(), packed[1], None).to_dense()
    if self.bias is not None:
        out = out + self.bias
    return out.reshape(*x.shape[:-1], -1)


def available(model) -> bool:
    """Whether :func:`use_onednn_head` applies: an fp32 ``nn.Linear`` head on the CPU with oneDNN built in."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return (
        type(head) is nn.Linear
        and head.weight.device.type == "cpu"
        and head.weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
    )


def use_onednn_head(model) -> bool:
    """Route ``model``'s output-head products of 2..:data:`MAX_ROWS` rows through oneDNN (in place;
    the weights, their tying and every one-row product stay as they are). Returns whether it applied."""
    if not available(model):
        return False
    head = model.get_output_embeddings()
    if getattr(head.forward, "__func__", None) is not _forward:
        head.forward = types.MethodType(_forward, head)
    return True
