"""PPO math by hand: GAE, KL-penalised rewards, whitening, clipped losses, KL controller."""

from __future__ import annotations

import pytest
import torch

from tunelab.methods.ppo import response_mask
from tunelab.methods.ppo_math import (
    KLController,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    kl_penalised_rewards,
    whiten,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_kl_penalised_rewards_put_score_on_last_real_token():
    logps, ref = t([-1.0, -2.0, -3.0]), t([-1.5, -2.0, -1.0])
    mask = t([1.0, 1.0, 0.0])
    r = kl_penalised_rewards(torch.tensor([2.0], dtype=torch.float64), logps, ref, mask, kl_coef=0.1)
    # token 0: -0.1*0.5; token 1: 0 + score 2; token 2 is padding
    torch.testing.assert_close(r, t([-0.05, 2.0, 0.0]))


def test_gae_by_hand():
    rewards, values, mask = t([0.0, 1.0, 5.0]), t([0.5, 0.2, 9.0]), t([1.0, 1.0, 0.0])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d1 = 1.0 + 0.9 * 0.0 - 0.2  # last real token bootstraps from 0 (padding value ignored)
    d0 = 0.0 + 0.9 * 0.2 - 0.5
    a0 = d0 + 0.9 * 0.5 * d1
    torch.testing.assert_close(adv, t([a0, d1, 0.0]))
    torch.testing.assert_close(ret, t([a0 + 0.5, d1 + 0.2, 0.0]))


def test_whiten_ignores_padding():
    x, mask = t([1.0, 3.0, 100.0]), t([1.0, 1.0, 0.0])
    w = whiten(x, mask)
    std = (2.0) ** 0.5  # unbiased variance of (1, 3) is 2
    torch.testing.assert_close(w[:, :2], t([-1.0 / std, 1.0 / std]), atol=1e-6, rtol=0)


def test_clipped_policy_loss_and_clip_fraction():
    old, mask = t([0.0, 0.0]), t([1.0, 1.0])
    logps = torch.log(t([1.5, 1.1]))  # ratios 1.5 (clipped at 1.2) and 1.1
    loss, frac = clipped_policy_loss(logps, old, t([1.0, 1.0]), mask, clip=0.2)
    assert loss.item() == pytest.approx(-(1.2 + 1.1) / 2)
    assert frac.item() == pytest.approx(0.5)
    loss, frac = clipped_policy_loss(logps, old, t([-1.0, -1.0]), mask, clip=0.2)
    assert loss.item() == pytest.approx((1.5 + 1.1) / 2)  # pessimistic: negative advantages are not clipped
    assert frac.item() == 0.0


def test_clipped_value_loss_by_hand():
    v, old, ret, mask = t([1.0]), t([0.0]), t([0.0]), t([1.0])
    # clipped value 0.2 -> max(1.0, 0.04) = 1.0 ; with return 1.0: max(0, 0.64) = 0.64
    assert clipped_value_loss(v, old, ret, mask, 0.2).item() == pytest.approx(0.5)
    assert clipped_value_loss(v, old, t([1.0]), mask, 0.2).item() == pytest.approx(0.5 * 0.64)


def test_explained_variance():
    ret, mask = t([1.0, 2.0, 3.0]), t([1.0, 1.0, 1.0])
    assert explained_variance(ret, ret, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(ret, 2.0), ret, mask).item() == pytest.approx(0.0)


def test_adaptive_kl_controller():
    fixed = KLController(0.1)
    fixed.update(100.0, 64)
    assert fixed.value == 0.1
    ctl = KLController(0.1, target=6.0, horizon=100)
    ctl.update(12.0, n_steps=10)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    ctl.update(5.4, n_steps=10)  # error -0.1
    assert ctl.value == pytest.approx(0.1 * 1.02 * (1 - 0.1 * 10 / 100))


def test_response_mask_stops_after_first_eos():
    resp = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]])
    torch.testing.assert_close(response_mask(resp, {2}), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
