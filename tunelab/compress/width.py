"""Width pruning: remove the MLP channels that contribute least on a calibration set.

Paper: Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge Distillation"
(Minitron, arXiv:2407.14679), §2.2: rank MLP neurons by their *activations* on a small
calibration set (no gradients), prune, then recover with distillation. The SwiGLU MLP of a
Llama-style model is ``down(act(gate(x)) ⊙ up(x))``; channel ``i`` of the intermediate
activation ``a`` reaches the output only through column ``i`` of ``down``, as ``a_i · W_down[:, i]``.
We score a channel by the size of that contribution over the calibration tokens,
``‖a_i‖₂ · ‖W_down[:, i]‖₂`` (Minitron's activation norm, weighted by the column it multiplies,
as Wanda weights |W| by the input norm: Sun et al. 2023, arXiv:2306.11695), and keep the same
number of channels in every layer, because transformers' config has one ``intermediate_size``.

Removing channel ``i`` deletes row ``i`` of ``gate`` and ``up`` and column ``i`` of ``down``: the
pruned MLP computes exactly the original minus the removed channels' contributions (tested),
and the smaller matrices shrink the file and the decode time (bench/prune.py).

With the calibration set's Gram matrices (:func:`down_grams`), :func:`prune_channels` also
*refits* ``down``: the kept channels are correlated with the removed ones, so a least-squares
``W'`` over the kept activations reproduces most of what the removed channels added
(He et al. 2017, "Channel Pruning for Accelerating Very Deep Neural Networks", arXiv:1707.06168,
§3.1: prune channels, then reconstruct the next layer's output by least squares). It costs one
solve per layer and no training, and lowers the perplexity the recovery run starts from
(bench/prune.py, docs/compress.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tunelab.compress.calib import run_calibration
from tunelab.compress.prune import decoder_layers, text_config
from tunelab.errors import ConfigError, ModelError

#: The three projections of a gated MLP (Llama, Mistral, Qwen2, Gemma naming).
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
#: Ridge of the refit, relative to the mean kept activation energy. SmolLM2-135M, MLP 1536 -> 992, 128
#: calibration rows, held-out perplexity (base 19.55; no refit 60.85): damp 1e-1 73.1, 1e-2 46.6, 1e-3 42.3,
#: 1e-4 41.4 (`python bench/prune.py --part refit --corpus-rows 320 --answer-tokens 64 --calib-rows 128
#: --keep 992`); 1e-3 keeps the solve well-conditioned on small calibration sets.
REFIT_DAMP = 1e-3
#: Calibration tokens per MLP channel below which the refit is skipped: fitted on too few tokens it
#: overfits them. Same prune and ridge, 36 rows (~2 tokens per channel): perplexity 91.6 without the
#: refit, 124.9 with it; 128 rows (~8 per channel): 60.85 without, 42.35 with (bench/prune.py --part refit).
REFIT_TOKENS_PER_CHANNEL = 4


def enough_for_refit(tokens: int, channels: int) -> bool:
    """Whether ``tokens`` calibration tokens suffice to refit an MLP of ``channels`` channels."""
    return tokens >= REFIT_TOKENS_PER_CHANNEL * channels


def _mlp(layer: Any) -> Any:
    mlp = getattr(layer, "mlp", None)
    if mlp is None or not all(hasattr(mlp, name) for name in MLP_PROJECTIONS):
        raise ModelError(
            f"width pruning needs a gated MLP with {', '.join(MLP_PROJECTIONS)}; "
            f"{type(layer).__name__} has {type(mlp).__name__}.\n  fix: use --method depth or magnitude"
        )
    return mlp


def _down_inputs(model: Any, calib_batches: Iterable[Any], gram: bool) -> list[Any]:
    """Per layer, over the real calibration tokens of ``a`` (the input of ``down_proj``): ``Σ a²`` per
    channel, a (I,) float64 tensor, or with ``gram`` the (I, I) float64 Gram matrix ``Σ a aᵀ``."""
    import torch

    mlps = [_mlp(layer) for layer in decoder_layers(model)]
    shape = (lambda n: (n, n)) if gram else (lambda n: (n,))
    stats = [torch.zeros(shape(mlp.down_proj.in_features), dtype=torch.float64) for mlp in mlps]
    state: dict[str, Any] = {}

    def hook(index: int):
        def capture(module, args):
            a = args[0][state["mask"]].double()  # (real tokens, I)
            stats[index] += (a.T @ a if gram else a.pow(2).sum(0)).cpu()

        return capture

    handles = [mlp.down_proj.register_forward_pre_hook(hook(i)) for i, mlp in enumerate(mlps)]
    run_calibration(model, calib_batches, handles, state)
    return stats


def down_grams(model: Any, calib_batches: Iterable[Any]) -> list[Any]:
    """Per layer, the (I, I) float64 Gram matrix ``Σ a aᵀ`` of the MLP's intermediate activation ``a``
    over the real calibration tokens: what :func:`prune_channels` refits ``down`` with (and, on its
    diagonal, what :func:`channel_importance` scores with)."""
    return _down_inputs(model, calib_batches, gram=True)


def channel_importance(model: Any, calib_batches: Iterable[Any] = (), grams: Sequence[Any] | None = None) -> list[Any]:
    """Per layer, a (intermediate_size,) tensor: ``‖a_i‖₂`` over real tokens times ``‖W_down[:, i]‖₂``.

    Args:
        model: a transformers causal LM with gated MLPs.
        calib_batches: as for :func:`tunelab.compress.prune.layer_scores` (padding is excluded).
        grams: :func:`down_grams` of the same model and batches: the same scores from their
            diagonals, without another calibration pass.
    """
    squares = [g.diagonal() for g in grams] if grams is not None else _down_inputs(model, calib_batches, gram=False)
    mlps = [_mlp(layer) for layer in decoder_layers(model)]
    column_norms = [mlp.down_proj.weight.detach().double().norm(dim=0).cpu() for mlp in mlps]  # (I,)
    return [(s.sqrt() * n).float() for s, n in zip(squares, column_norms, strict=True)]


def channels_to_keep(scores: Sequence[Any], keep: int) -> list[Any]:
    """Per layer, the sorted indices of the ``keep`` highest-scoring channels (ties: the lower index)."""
    import torch

    out = []
    for s in scores:
        order = torch.argsort(-s, stable=True)
        out.append(torch.sort(order[:keep]).values)
    return out


def _narrow(linear: Any, index: Any, dim: int) -> Any:
    """A new Linear keeping ``index`` along the weight's ``dim`` (0 = output rows, 1 = input columns)."""
    import torch.nn as nn

    weight = linear.weight.detach().index_select(dim, index.to(linear.weight.device)).clone()
    out_f, in_f = weight.shape
    new = nn.Linear(in_f, out_f, bias=linear.bias is not None, device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        bias = linear.bias.detach()
        new.bias.data.copy_(bias.index_select(0, index.to(bias.device)) if dim == 0 else bias)
    return new


def refit_down(weight: Any, index: Any, gram: Any, damp: float = REFIT_DAMP) -> Any:
    """The least-squares ``down`` weight over the kept channels: ``argmin_W' Σ ‖W' a_K − W a‖²``.

    With ``G = Σ a aᵀ`` the normal equations give ``W' = W G[:, K] (G[K, K] + λI)⁻¹``, where
    ``λ = damp · mean(diag G[K, K])`` keeps the solve stable for nearly collinear channels. With
    ``damp`` 0 the residual ``W' a_K − W a`` is orthogonal to every kept activation (tested).

    Args:
        weight: (H, I) the unpruned ``down_proj`` weight; index: the kept channels (K,);
        gram: (I, I) from :func:`down_grams`.

    Returns:
        (H, K) in the weight's dtype.
    """
    import torch

    g = gram.to(torch.float64)
    kept = index.to(g.device)
    g_kk = g.index_select(0, kept).index_select(1, kept)
    g_kk = g_kk + damp * g_kk.diagonal().mean() * torch.eye(len(kept), dtype=g.dtype, device=g.device)
    rhs = g.index_select(0, kept) @ weight.detach().to(g).T  # (K, H) = G[K, :] Wᵀ
    return torch.linalg.solve(g_kk, rhs).T.to(weight.dtype)


def prune_channels(
    model: Any, keep_index: Sequence[Any], grams: Sequence[Any] | None = None, damp: float = REFIT_DAMP
) -> Any:
    """Keep, in layer ``l``, the MLP channels ``keep_index[l]`` (same count in every layer); in place.

    Rows of ``gate_proj``/``up_proj`` and columns of ``down_proj`` are removed together and
    ``config.intermediate_size`` is set to the kept count, so ``save_pretrained`` writes a folder
    plain ``AutoModelForCausalLM`` loads. With ``grams`` (:func:`down_grams`, one per layer) the
    narrowed ``down_proj`` is refitted by least squares (:func:`refit_down`) instead of keeping its
    columns as they were.
    """
    layers = decoder_layers(model)
    sizes = {len(index) for index in keep_index}
    if len(keep_index) != len(layers) or len(sizes) != 1:
        raise ConfigError(
            f"width pruning keeps one channel count in all {len(layers)} layers; got {sorted(sizes)} "
            f"over {len(keep_index)} layers.\n  fix: pass one index list per layer, all of the same length"
        )
    keep = sizes.pop()
    if keep < 1:
        raise ConfigError("width pruning would keep no MLP channel.\n  fix: raise --keep")
    for i, (layer, index) in enumerate(zip(layers, keep_index, strict=True)):
        mlp = _mlp(layer)
        mlp.gate_proj = _narrow(mlp.gate_proj, index, 0)
        mlp.up_proj = _narrow(mlp.up_proj, index, 0)
        down = mlp.down_proj
        mlp.down_proj = _narrow(down, index, 1)
        if grams is not None:
            mlp.down_proj.weight.data.copy_(refit_down(down.weight, index, grams[i], damp))
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = keep
    text_config(model).intermediate_size = keep
    return model


#: A fraction ``--keep`` rounds an MLP of at least ``FAST_WIDTH_FROM`` channels to a multiple of
#: ``FAST_WIDTH``: llama.cpp's f16 dot product on AVX-512 takes 64 elements a step (16 lanes x 4
#: accumulators) and leaves the remainder to a scalar loop, so a width that is an odd multiple of 32
#: decodes slower than the next multiple of 64 up. SmolLM2-135M's f16 GGUF, llama.cpp, 2 threads, one
#: decode step (20th percentile of 15 x 128): MLP 960 6.89 ms, 992 7.41, 1024 7.01, 1056 7.85
#: (`python bench/prune.py --part sizes --keep 0.625 --mix 0,992 --mix 0,1024 --mix 0,1056 --llama-only
#: ...`, docs/compress.md). AVX2's step is 32 elements: there 992 and 1024 measured alike.
FAST_WIDTH, FAST_WIDTH_FROM = 64, 1024
#: GGUF's block width (q8_0, q4_0): a kept count must be a multiple of it to quantize.
GGUF_BLOCK = 32


def kept_width(intermediate_size: int, keep: float) -> int:
    """Channels kept for ``keep``: a fraction (0, 1] of ``intermediate_size``, or above 1 a channel count.

    A count is rounded to a multiple of :data:`GGUF_BLOCK` (32); a fraction of an MLP at least
    :data:`FAST_WIDTH_FROM` wide to a multiple of :data:`FAST_WIDTH` (64, llama.cpp's fast width on
    AVX-512), of a narrower one to 32. Rounding never goes below one multiple nor above the original
    size; an MLP narrower than two multiples is not rounded.
    """
    if keep <= 0:
        raise ConfigError(f"--keep {keep}: must be a fraction in (0, 1] or a channel count.\n  fix: e.g. --keep 0.75")
    target = keep if keep > 1 else keep * intermediate_size
    if target > intermediate_size:
        raise ConfigError(
            f"--keep {keep}: more than the {intermediate_size} MLP channels the model has.\n  fix: pass a smaller value"
        )
    multiple = FAST_WIDTH if keep <= 1 and intermediate_size >= FAST_WIDTH_FROM else GGUF_BLOCK
    step = multiple if intermediate_size >= 2 * multiple else 1
    return int(min(intermediate_size, max(step, round(target / step) * step)))
