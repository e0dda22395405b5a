"""Distillation divergences: pure functions on per-token log-probabilities, looked up in a registry.

Papers: knowledge distillation with a softened teacher (Hinton et al., 2015, "Distilling the
Knowledge in a Neural Network", arXiv:1503.02531); reverse KL for generative students (Gu et
al., 2024, MiniLLM, arXiv:2306.08543); the generalized Jensen–Shannon divergence of GKD
(Agarwal et al., 2024, "On-Policy Distillation of Language Models", arXiv:2306.13649, Eq. 1).

Intuition: forward KL ``KL(p_T || p_S)`` is mass-covering (the student is punished wherever the
teacher puts mass it misses); reverse KL ``KL(p_S || p_T)`` is mode-seeking (the student is
punished for mass where the teacher has little), which suits a small student that cannot cover
every mode. The generalized JSD interpolates: with the mixture ``M = β p_T + (1 − β) p_S`` it is
``β KL(p_T || M) + (1 − β) KL(p_S || M)``; as TRL's ``GKDTrainer.generalized_jsd_loss`` (1.x) does,
``β = 0`` is taken to mean forward KL and ``β = 1`` reverse KL (the limits of the normalised JSD).

The functions take ``(N, V)`` log-probabilities of the N trained positions (already masked to
``label != -100`` and temperature-scaled by the caller) and return ``(N,)`` per-token values.
They also accept the ``(N, k + 1)`` bucket distributions of a top-k teacher cache
(:func:`topk_buckets`): the divergence between two distributions coarsened to the same buckets.

Checked against: ``tests/methods/test_distill_losses.py`` (hand-computed values for every loss;
TRL's ``generalized_jsd_loss`` within 1e-5 for β in {0, 0.5, 1}); ``bench/distill_trl.py`` on the
bundled model's logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from tunelab.registry import Registry

#: Floor for log-probabilities: ``exp(-1e4) == 0`` exactly in fp32, yet ``0 * (floor - x)`` stays
#: finite, so empty buckets (a zero rest mass) contribute 0 to the value and to the gradient.
LOG_FLOOR = -1.0e4


def _kl(logp: Tensor, logq: Tensor) -> Tensor:
    """``(N,)`` ``KL(p || q) = sum_v p_v (log p_v - log q_v)`` from log-probs ``(N, V)``."""
    logp, logq = logp.clamp(min=LOG_FLOOR), logq.clamp(min=LOG_FLOOR)
    return (logp.exp() * (logp - logq)).sum(-1)


def forward_kl(student_logp: Tensor, teacher_logp: Tensor) -> Tensor:
    """``KL(p_T || p_S)`` per token (Hinton et al., 2015; TRL's β = 0)."""
    return _kl(teacher_logp, student_logp)


def reverse_kl(student_logp: Tensor, teacher_logp: Tensor) -> Tensor:
    """``KL(p_S || p_T)`` per token (MiniLLM; TRL's β = 1)."""
    return _kl(student_logp, teacher_logp)


def generalized_jsd(student_logp: Tensor, teacher_logp: Tensor, beta: float = 0.5) -> Tensor:
    """``β KL(p_T || M) + (1 − β) KL(p_S || M)`` with ``M = β p_T + (1 − β) p_S`` (GKD, Eq. 1).

    ``β = 0`` and ``β = 1`` return forward and reverse KL, as TRL does.
    """
    if beta <= 0.0:
        return forward_kl(student_logp, teacher_logp)
    if beta >= 1.0:
        return reverse_kl(student_logp, teacher_logp)
    s, t = student_logp.clamp(min=LOG_FLOOR), teacher_logp.clamp(min=LOG_FLOOR)
    mixture = torch.logaddexp(s + math.log1p(-beta), t + math.log(beta))  # log M, (N, V)
    return beta * _kl(t, mixture) + (1.0 - beta) * _kl(s, mixture)


@dataclass(frozen=True)
class Divergence:
    """A registered divergence: ``fn(student_logp, teacher_logp, beta) -> (N,)``."""

    fn: Callable[[Tensor, Tensor, float], Tensor]
    summary: str


#: ``method_args.loss`` of ``method: distill`` -> its divergence (the names of
#: :class:`tunelab.methods.args.DistillArgs` ``loss``; a test keeps them in step).
DIVERGENCES: Registry[Divergence] = Registry("distillation loss", key="method_args.loss")
DIVERGENCES.register("forward_kl", Divergence(lambda s, t, beta: forward_kl(s, t), "KL(teacher || student)"))
DIVERGENCES.register("reverse_kl", Divergence(lambda s, t, beta: reverse_kl(s, t), "KL(student || teacher)"))
DIVERGENCES.register("jsd", Divergence(generalized_jsd, "generalized JSD with beta (GKD)"))


def masked_mean_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    loss: str,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:
    """Mean divergence over the trained positions, from aligned logits (TRL's calling convention).

    Args:
        student_logits: (B, T, V) student scores.
        teacher_logits: (B, T, V) teacher scores at the same positions.
        labels: (B, T) -100 where a position is not trained (aligned with the logits, not shifted).
        loss: a :data:`DIVERGENCES` name.

    Returns:
        Scalar: the sum over trained positions divided by their count (at least 1).
    """
    mask = labels != -100
    s = torch.log_softmax(student_logits[mask].float() / temperature, dim=-1)
    t = torch.log_softmax(teacher_logits[mask].float() / temperature, dim=-1)
    return DIVERGENCES.get(loss).fn(s, t, beta).sum() / mask.sum().clamp(min=1)


# --------------------------------------------------------------------------- top-k cache


def teacher_topk(teacher_logp: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """What the cache stores per trained token: the teacher's top-k ids and log-probs, and the
    log of the mass outside them.

    Args:
        teacher_logp: (N, V) temperature-scaled teacher log-probs.

    Returns:
        ``ids`` (N, k) int64, ``logp`` (N, k), ``rest`` (N,) (``LOG_FLOOR`` when k = V).
    """
    k = min(k, teacher_logp.size(-1))
    logp, ids = teacher_logp.topk(k, dim=-1)
    return ids, logp, _rest_logmass(teacher_logp, ids)


def _rest_logmass(logp: Tensor, ids: Tensor) -> Tensor:
    """(N,) ``log sum_{v not in ids} p_v``, computed without cancellation (floored when empty)."""
    if ids.size(-1) == logp.size(-1):
        return logp.new_full(logp.shape[:-1], LOG_FLOOR)
    others = logp.clamp(min=LOG_FLOOR).scatter(-1, ids, LOG_FLOOR)
    return torch.logsumexp(others, dim=-1).clamp(min=LOG_FLOOR)


def topk_buckets(
    student_logp: Tensor, ids: Tensor, teacher_logp: Tensor, teacher_rest: Tensor
) -> tuple[Tensor, Tensor]:
    """Student and teacher as distributions over k + 1 buckets: the teacher's top-k tokens and
    "the rest".

    This is the approximation of the cache: the teacher's top-k probabilities are kept exactly
    and the rest of its mass is one bucket, against the student's probabilities of the same k
    tokens and its own rest mass. Both stay normalised, so every divergence is well defined; by
    the data-processing inequality the bucketed divergence is a lower bound of the full one,
    and it equals it when k = V (the rest buckets are then empty).

    Args:
        student_logp: (N, V) temperature-scaled student log-probs.
        ids: (N, k) the teacher's top-k token ids.
        teacher_logp: (N, k) the teacher's log-probs of those ids.
        teacher_rest: (N,) log of the teacher's mass outside them.

    Returns:
        ``(student_buckets, teacher_buckets)``: (N, k + 1) log-probs each.
    """
    student_top = student_logp.gather(-1, ids)
    student_rest = _rest_logmass(student_logp, ids)
    student = torch.cat([student_top, student_rest.unsqueeze(-1)], dim=-1)
    teacher = torch.cat([teacher_logp, teacher_rest.unsqueeze(-1)], dim=-1)
    return student, teacher
