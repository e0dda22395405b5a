"""Preference losses: pure functions on sequence log-probabilities, looked up in registries.

Papers: DPO (Rafailov et al., 2023, arXiv:2305.18290), IPO (Azar et al., 2023,
arXiv:2310.12036), hinge / SLiC (Zhao et al., 2023, arXiv:2305.10425), robust DPO (Chowdhury
et al., 2024, arXiv:2403.00409), SimPO (Meng et al., 2024, arXiv:2405.14734), ORPO (Hong et
al., 2024, arXiv:2403.07691), KTO (Ethayarajh et al., 2024, arXiv:2402.01306) and the
Bradley–Terry reward model loss (Ouyang et al., 2022; margin as in Llama 2, Touvron et al., 2023).

Intuition: every direct method scores a completion by an *implicit reward*, a scaled log-ratio
of the policy to a reference (DPO family, KTO) or a length-normalised log-likelihood (SimPO,
ORPO), and pushes the chosen completion's score above the rejected one's. The functions here
know nothing about models: they take summed log-probs ``(B,)`` and completion lengths ``(B,)``,
so they are tested on hand-computed numbers and against TRL 1.16 on identical inputs.

Checked against: ``tests/align/test_losses.py`` (hand-computed values for every loss; DPO
sigmoid and IPO against ``trl.DPOTrainer``, KTO against ``trl.KTOTrainer`` and the reward
loss against ``trl.RewardTrainer``, all within 1e-4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from tunelab.errors import ConfigError
from tunelab.registry import Registry


@dataclass(frozen=True)
class PairLogps:
    """Summed completion log-probs of a batch of preference pairs.

    Attributes:
        chosen: (B,) ``sum_t log pi(y_w,t | x, y_w,<t)`` under the policy.
        rejected: (B,) same for the rejected completion.
        chosen_tokens: (B,) number of chosen completion tokens (for length normalisation).
        rejected_tokens: (B,) number of rejected completion tokens.
        ref_chosen: (B,) reference log-probs of the chosen completion (None if reference-free).
        ref_rejected: (B,) reference log-probs of the rejected completion.
    """

    chosen: Tensor
    rejected: Tensor
    chosen_tokens: Tensor
    rejected_tokens: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None


@dataclass(frozen=True)
class LossParams:
    """Hyper-parameters shared by the preference losses (each loss reads the ones it uses)."""

    beta: float = 0.1
    label_smoothing: float = 0.0
    gamma: float = 0.5  # SimPO target margin
    orpo_lambda: float = 0.1  # ORPO weight of the odds-ratio term


@dataclass
class LossOutput:
    """Per-pair loss and implicit rewards (detached) of one batch.

    ``parts`` holds named per-pair components (ORPO: ``nll`` and ``log_odds_ratio``).
    """

    loss: Tensor  # (B,)
    chosen_rewards: Tensor  # (B,)
    rejected_rewards: Tensor  # (B,)
    parts: dict[str, Tensor] = field(default_factory=dict)


# --------------------------------------------------------------------------- pure math


def dpo_sigmoid_loss(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, beta: float) -> Tensor:
    """DPO: ``-log σ(β[(log π_c − log π_ref,c) − (log π_r − log π_ref,r)])`` per pair, (B,)."""
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))


def ipo_loss(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, beta: float, len_c: Tensor, len_r: Tensor) -> Tensor:
    """IPO (Azar et al. Eq. 17): ``(h − 1/(2β))²`` with ``h`` the per-token-averaged log-ratio margin.

    The per-token average follows TRL (confirmed there with the IPO authors): summed log-ratios
    would make the squared target depend on completion length.
    """
    h = (pc - rc) / len_c.clamp(min=1) - (pr - rr) / len_r.clamp(min=1)
    return (h - 1.0 / (2.0 * beta)) ** 2


def hinge_loss(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, beta: float) -> Tensor:
    """SLiC hinge: ``max(0, 1 − β·margin)`` on the log-ratio margin, (B,)."""
    return torch.relu(1.0 - beta * ((pc - rc) - (pr - rr)))


def robust_dpo_loss(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, beta: float, eps: float) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024, Eq. 8): unbiased under labels flipped with rate ``eps``.

    ``[(1−ε)·(−log σ(βh)) − ε·(−log σ(−βh))] / (1 − 2ε)``.
    """
    if not 0.0 <= eps < 0.5:
        raise ConfigError(f"method_args.label_smoothing: {eps} must be in [0, 0.5) for the robust loss")
    z = beta * ((pc - rc) - (pr - rr))
    return ((1.0 - eps) * -F.logsigmoid(z) - eps * -F.logsigmoid(-z)) / (1.0 - 2.0 * eps)


def simpo_loss(pc: Tensor, pr: Tensor, len_c: Tensor, len_r: Tensor, beta: float, gamma: float) -> Tensor:
    """SimPO: ``-log σ(β·(log π_c/|y_c| − log π_r/|y_r|) − γ)``; reference-free, (B,)."""
    return -F.logsigmoid(beta * (pc / len_c.clamp(min=1) - pr / len_r.clamp(min=1)) - gamma)


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 − exp(x))`` for ``x < 0``, stable near 0 and for very negative x (Mächler 2012)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_log_odds_ratio(avg_c: Tensor, avg_r: Tensor) -> Tensor:
    """``log σ(log odds(y_c) − log odds(y_r))`` with ``odds(y) = P(y)/(1 − P(y))`` on mean token log-probs."""
    log_odds = (avg_c - avg_r) - (log1mexp(avg_c) - log1mexp(avg_r))
    return F.logsigmoid(log_odds)


def kto_loss(
    chosen_logratios: Tensor,
    rejected_logratios: Tensor,
    kl: Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Tensor:
    """KTO (Ethayarajh et al. Eq. 7): value of each completion relative to the reference point ``kl``.

    Args:
        chosen_logratios: (Nd,) ``log π − log π_ref`` of desirable completions.
        rejected_logratios: (Nu,) same for undesirable completions.
        kl: scalar reference point ``z_0``, detached (see :func:`kto_kl_estimate`).

    Returns:
        (Nd + Nu,) weighted per-example losses, desirable first.
    """
    chosen = 1.0 - torch.sigmoid(beta * (chosen_logratios - kl))
    rejected = 1.0 - torch.sigmoid(beta * (kl - rejected_logratios))
    return torch.cat([desirable_weight * chosen, undesirable_weight * rejected])


def kto_kl_estimate(mismatched_policy_logps: Tensor, mismatched_ref_logps: Tensor) -> Tensor:
    """KTO reference point: batch mean of ``log π(y'|x) − log π_ref(y'|x)`` on mismatched pairs, ≥ 0, detached.

    As in TRL, ``y'`` are the batch's completions rotated by one so that each is paired with
    another example's prompt; the estimate carries no gradient.
    """
    return (mismatched_policy_logps - mismatched_ref_logps).mean().detach().clamp(min=0)


def bradley_terry_loss(chosen_scores: Tensor, rejected_scores: Tensor, margin: Tensor | float | None = None) -> Tensor:
    """Reward model loss ``-log σ(r_c − r_r − m)`` per pair, (B,); ``m`` = optional margin (Llama 2)."""
    diff = chosen_scores - rejected_scores
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)


# --------------------------------------------------------------------------- registry


def _ref(x: PairLogps) -> tuple[Tensor, Tensor]:
    if x.ref_chosen is None or x.ref_rejected is None:
        raise ValueError("this loss needs reference log-probs")
    return x.ref_chosen, x.ref_rejected


def _logratio_rewards(x: PairLogps, beta: float) -> tuple[Tensor, Tensor]:
    rc, rr = _ref(x)
    return beta * (x.chosen - rc).detach(), beta * (x.rejected - rr).detach()


def _sigmoid(x: PairLogps, p: LossParams) -> LossOutput:
    rc, rr = _ref(x)
    return LossOutput(dpo_sigmoid_loss(x.chosen, x.rejected, rc, rr, p.beta), *_logratio_rewards(x, p.beta))


def _ipo(x: PairLogps, p: LossParams) -> LossOutput:
    rc, rr = _ref(x)
    loss = ipo_loss(x.chosen, x.rejected, rc, rr, p.beta, x.chosen_tokens, x.rejected_tokens)
    return LossOutput(loss, *_logratio_rewards(x, p.beta))


def _hinge(x: PairLogps, p: LossParams) -> LossOutput:
    rc, rr = _ref(x)
    return LossOutput(hinge_loss(x.chosen, x.rejected, rc, rr, p.beta), *_logratio_rewards(x, p.beta))


def _robust(x: PairLogps, p: LossParams) -> LossOutput:
    rc, rr = _ref(x)
    loss = robust_dpo_loss(x.chosen, x.rejected, rc, rr, p.beta, p.label_smoothing)
    return LossOutput(loss, *_logratio_rewards(x, p.beta))


def _length_normalised(x: PairLogps) -> tuple[Tensor, Tensor]:
    return x.chosen / x.chosen_tokens.clamp(min=1), x.rejected / x.rejected_tokens.clamp(min=1)


def _simpo(x: PairLogps, p: LossParams) -> LossOutput:
    avg_c, avg_r = _length_normalised(x)
    loss = simpo_loss(x.chosen, x.rejected, x.chosen_tokens, x.rejected_tokens, p.beta, p.gamma)
    return LossOutput(loss, p.beta * avg_c.detach(), p.beta * avg_r.detach())


def _orpo(x: PairLogps, p: LossParams) -> LossOutput:
    """ORPO: ``NLL(y_c) − λ·log σ(log odds ratio)``; NLL is the chosen completion's mean token NLL."""
    avg_c, avg_r = _length_normalised(x)
    nll = -avg_c
    ratio = orpo_log_odds_ratio(avg_c, avg_r)
    loss = nll - p.orpo_lambda * ratio
    parts = {"nll": nll.detach(), "log_odds_ratio": ratio.detach()}
    return LossOutput(loss, p.orpo_lambda * avg_c.detach(), p.orpo_lambda * avg_r.detach(), parts)


@dataclass(frozen=True)
class PairLoss:
    """A registered pairwise loss and whether it needs the reference model."""

    fn: Callable[[PairLogps, LossParams], LossOutput]
    needs_reference: bool


#: Pairwise preference losses by name (``method_args.loss``); the names and reference flags are
#: also in the torch-free :data:`tunelab.methods.args.PAIR_LOSSES` (tests/test_registry.py).
LOSSES: Registry[PairLoss] = Registry("loss", key="method_args.loss")
LOSSES.register("sigmoid", PairLoss(_sigmoid, True))
LOSSES.register("ipo", PairLoss(_ipo, True))
LOSSES.register("hinge", PairLoss(_hinge, True))
LOSSES.register("robust", PairLoss(_robust, True))
LOSSES.register("simpo", PairLoss(_simpo, False))
LOSSES.register("orpo", PairLoss(_orpo, False))


def get_loss(name: str) -> PairLoss:
    """The registered pairwise loss ``name``.

    Raises:
        ConfigError: unknown name (lists the valid ones and the closest).
    """
    return LOSSES.get(name)
