"""The math of PPO for RLHF as pure tensor functions: GAE, whitening, clipped losses, KL control.

Papers: PPO (Schulman et al., 2017, arXiv:1707.06347); GAE (Schulman et al., 2016,
arXiv:1506.02438); RLHF with a per-token KL penalty and the adaptive KL controller (Ziegler et
al., 2019, arXiv:1909.08593; Stiennon et al., 2020; Ouyang et al., 2022).

All tensors are (B, R) over response tokens with a 0/1 ``mask`` (1 = a real generated token);
masked statistics ignore padding after EOS. Checked by hand-computed values in
``tests/align/test_ppo_math.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: Tensor, mask: Tensor) -> Tensor:
    """Unbiased variance of the masked entries (Bessel-corrected, as TRL's ``masked_var``)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    return var * n / (n - 1).clamp(min=1)


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """``(x − mean) / sqrt(var + 1e-8)`` over masked entries (mean kept if ``shift_mean`` is False)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def kl_penalised_rewards(scores: Tensor, logps: Tensor, ref_logps: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token rewards ``−β·(log π − log π_ref)`` with the sequence score added at the last real token.

    Args:
        scores: (B,) reward-model (or rule) score of each completion.
        logps, ref_logps: (B, R) log-probs of the generated tokens under policy and reference.
        mask: (B, R) 1 on generated tokens (through EOS).
    """
    rewards = -kl_coef * (logps - ref_logps) * mask
    last = (mask.cumsum(dim=1) == mask.sum(dim=1, keepdim=True)) & (mask > 0)  # (B, R) one-hot at the end
    return rewards + last.to(rewards.dtype) * scores.unsqueeze(1)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over response tokens.

    ``δ_t = r_t + γ V_{t+1} − V_t``, ``A_t = δ_t + γλ A_{t+1}``; values and advantages past the
    end of a sequence are 0, so the last real token bootstraps from nothing.

    Returns:
        ``(advantages, returns)`` both (B, R); ``returns = advantages + values``.
    """
    values = values * mask
    rewards = rewards * mask
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, adv + values


def clipped_policy_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, clip: float):
    """PPO-clip surrogate ``mean(max(−A·ρ, −A·clip(ρ, 1±ε)))`` and the fraction of clipped tokens."""
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_frac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_frac


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float) -> Tensor:
    """``0.5·mean(max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²))``."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """``1 − Var(R − V)/Var(R)``: 1 = the critic predicts returns perfectly, ≤ 0 = no better than the mean."""
    return 1.0 - masked_var(returns - values, mask) / masked_var(returns, mask).clamp(min=1e-8)


@dataclass
class KLController:
    """β of the KL penalty: fixed, or adaptive (Ziegler et al. 2019, Sec. 2.2) when ``target`` is set.

    Adaptive: ``e = clip(KL/target − 1, −0.2, 0.2)``, ``β ← β·(1 + e·n/horizon)`` after each
    rollout of ``n`` sequences, so β grows when the policy drifts past the target KL.
    """

    value: float
    target: float | None = None
    horizon: int = 10000

    def update(self, current_kl: float, n_steps: int) -> None:
        if self.target is None:
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
