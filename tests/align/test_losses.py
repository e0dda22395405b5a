"""Loss math: hand-computed values for every loss, and TRL 1.16 on identical inputs (1e-4)."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tunelab.errors import ConfigError
from tunelab.methods.losses import (
    LOSSES,
    LossParams,
    PairLogps,
    bradley_terry_loss,
    get_loss,
    kto_kl_estimate,
    kto_loss,
    log1mexp,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


# One pair: policy chosen -1, rejected -2; reference -1.5 for both; 2 and 4 completion tokens.
ONE = PairLogps(t(-1.0), t(-2.0), t(2.0), t(4.0), t(-1.5), t(-1.5))


def test_dpo_sigmoid_hand_value():
    # h = (-1 + 1.5) - (-2 + 1.5) = 1.0; beta 0.5 -> -log sigmoid(0.5) = softplus(-0.5)
    out = LOSSES["sigmoid"].fn(ONE, LossParams(beta=0.5))
    assert out.loss.item() == pytest.approx(softplus(-0.5), abs=1e-12)
    assert out.chosen_rewards.item() == pytest.approx(0.25)
    assert out.rejected_rewards.item() == pytest.approx(-0.25)


def test_ipo_hand_value():
    # per-token margin h = 0.5/2 - (-0.5)/4 = 0.375; beta 0.5 -> (0.375 - 1)^2
    out = LOSSES["ipo"].fn(ONE, LossParams(beta=0.5))
    assert out.loss.item() == pytest.approx((0.375 - 1.0) ** 2)


def test_hinge_hand_value():
    assert LOSSES["hinge"].fn(ONE, LossParams(beta=0.5)).loss.item() == pytest.approx(0.5)
    assert LOSSES["hinge"].fn(ONE, LossParams(beta=2.0)).loss.item() == pytest.approx(0.0)


def test_robust_hand_value_and_reduces_to_dpo():
    eps = 0.1
    expected = ((1 - eps) * softplus(-0.5) - eps * softplus(0.5)) / (1 - 2 * eps)
    out = LOSSES["robust"].fn(ONE, LossParams(beta=0.5, label_smoothing=eps))
    assert out.loss.item() == pytest.approx(expected)
    plain = LOSSES["robust"].fn(ONE, LossParams(beta=0.5, label_smoothing=0.0)).loss
    assert plain.item() == pytest.approx(softplus(-0.5))
    with pytest.raises(ConfigError, match="label_smoothing"):
        LOSSES["robust"].fn(ONE, LossParams(label_smoothing=0.5))


def test_simpo_hand_value_is_reference_free():
    # avg chosen -1/2, avg rejected -2/4 -> equal: -log sigmoid(beta*0 - gamma) = softplus(gamma)
    x = PairLogps(t(-1.0), t(-2.0), t(2.0), t(4.0))
    out = LOSSES["simpo"].fn(x, LossParams(beta=2.0, gamma=0.5))
    assert out.loss.item() == pytest.approx(softplus(0.5))
    y = PairLogps(t(-1.0), t(-4.0), t(2.0), t(4.0))  # averages -0.5 vs -1.0
    assert LOSSES["simpo"].fn(y, LossParams(beta=2.0, gamma=0.5)).loss.item() == pytest.approx(softplus(-0.5))
    assert not LOSSES["simpo"].needs_reference and not LOSSES["orpo"].needs_reference


def test_orpo_hand_value_and_parts():
    # avg log p: chosen log 0.5, rejected log 0.25 -> odds 1 and 1/3 -> log odds ratio log 3
    x = PairLogps(t(2 * math.log(0.5)), t(4 * math.log(0.25)), t(2.0), t(4.0))
    out = LOSSES["orpo"].fn(x, LossParams(orpo_lambda=0.2))
    ratio = -softplus(-math.log(3.0))  # log sigmoid(log 3) = log 0.75
    assert ratio == pytest.approx(math.log(0.75))
    assert out.parts["nll"].item() == pytest.approx(-math.log(0.5))
    assert out.parts["log_odds_ratio"].item() == pytest.approx(math.log(0.75))
    assert out.loss.item() == pytest.approx(-math.log(0.5) - 0.2 * math.log(0.75))


def test_log1mexp_is_stable():
    x = t(-1e-9, -0.1, -1.0, -50.0)
    got = log1mexp(x)
    assert torch.isfinite(got).all()
    assert got[1].item() == pytest.approx(math.log(1 - math.exp(-0.1)))
    assert got[3].item() == pytest.approx(-math.exp(-50.0), rel=1e-6)


def test_kto_hand_value():
    kl = kto_kl_estimate(t(-1.0, -3.0), t(-1.5, -3.5))  # mean(0.5, 0.5) = 0.5
    assert kl.item() == pytest.approx(0.5)
    assert kto_kl_estimate(t(-2.0), t(-1.0)).item() == 0.0  # clamped at 0
    loss = kto_loss(t(1.5), t(-0.5), kl, beta=1.0, desirable_weight=2.0, undesirable_weight=1.0)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731 - tiny local helper
    assert loss[0].item() == pytest.approx(2.0 * (1 - sig(1.0)))
    assert loss[1].item() == pytest.approx(1 - sig(1.0))


def test_bradley_terry_hand_value():
    assert bradley_terry_loss(t(2.0), t(1.0)).item() == pytest.approx(softplus(-1.0))
    assert bradley_terry_loss(t(2.0), t(1.0), t(0.5)).item() == pytest.approx(softplus(-0.5))


def test_unknown_loss_lists_valid():
    with pytest.raises(ConfigError, match="sigmoid"):
        get_loss("dpo2")


# --------------------------------------------------------------------------- TRL equivalence


class _FakeLM(nn.Module):
    """Stands in for a model under TRL's fused LM head: returns fixed per-token log-probs."""

    def __init__(self, per_token_logps: torch.Tensor):
        super().__init__()
        self.per_token_logps = per_token_logps

    def forward(self, **kwargs):
        lp = self.per_token_logps
        return SimpleNamespace(
            log_probs=lp, entropy=torch.zeros_like(lp), mean_logits=torch.zeros_like(lp),
            is_top1=torch.zeros_like(lp, dtype=torch.bool), logits=lp, aux_loss=None,
        )


def _trl_common(trainer, model):
    trainer.model = model
    same = lambda x: x  # noqa: E731 - one process: gathering is the identity
    trainer.accelerator = SimpleNamespace(device=torch.device("cpu"), gather=same, gather_for_metrics=same,
                                          unwrap_model=same)
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens = 0
    trainer._tp_size = 1
    trainer.aux_loss_enabled = False
    trainer.precompute_ref_logps = True


def _random_pairs(b: int, t_len: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(2, t_len - 1, (2 * b,), generator=g)
    completion_mask = torch.zeros(2 * b, t_len, dtype=torch.long)
    for i, n in enumerate(lens.tolist()):
        completion_mask[i, t_len - n :] = 1
    per_token = -torch.rand(2 * b, t_len - 1, generator=g, dtype=torch.float32) * 3 * completion_mask[:, 1:]
    ref = -torch.rand(2 * b, generator=g) * 10
    return completion_mask, per_token, ref


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_matches_trl(loss_type):
    from trl import DPOTrainer

    b, t_len, beta = 5, 9, 0.3
    completion_mask, per_token, ref = _random_pairs(b, t_len, seed=3)
    trainer = object.__new__(DPOTrainer)
    _trl_common(trainer, _FakeLM(per_token))
    trainer.ld_alpha, trainer.f_divergence_type, trainer.use_weighting = None, "reverse_kl", False
    trainer.loss_types, trainer.loss_weights, trainer.beta, trainer.label_smoothing = [loss_type], [1.0], beta, 0.0
    inputs = {"input_ids": torch.ones(2 * b, t_len, dtype=torch.long), "attention_mask": torch.ones(2 * b, t_len),
              "completion_mask": completion_mask, "ref_chosen_logps": ref[:b], "ref_rejected_logps": ref[b:]}
    theirs = trainer._compute_loss(trainer.model, inputs, return_outputs=False)

    logps, lens = per_token.sum(1), completion_mask.sum(1).float()
    x = PairLogps(logps[:b], logps[b:], lens[:b], lens[b:], ref[:b], ref[b:])
    ours = LOSSES[loss_type].fn(x, LossParams(beta=beta))
    assert ours.loss.mean().item() == pytest.approx(theirs.item(), abs=1e-4)
    metrics = trainer._metrics["train"]
    assert ours.chosen_rewards.mean().item() == pytest.approx(metrics["rewards/chosen"][0], abs=1e-4)
    assert (ours.chosen_rewards - ours.rejected_rewards).mean().item() == pytest.approx(
        metrics["rewards/margins"][0], abs=1e-4)


def test_kto_matches_trl():
    from trl import KTOTrainer

    n, t_len, beta = 6, 8, 0.2
    g = torch.Generator().manual_seed(7)
    completion_mask = torch.ones(n, t_len, dtype=torch.long)
    completion_mask[:, :3] = 0
    per_token = -torch.rand(n, t_len - 1, generator=g) * 2 * completion_mask[:, 1:]
    kl_per_token = -torch.rand(n, t_len - 1, generator=g) * 2 * completion_mask[:, 1:]
    ref, ref_kl = -torch.rand(n, generator=g) * 8, -torch.rand(n, generator=g) * 12
    label = torch.tensor([True, False, True, True, False, False])

    class TwoHeaded(_FakeLM):
        def forward(self, **kwargs):
            out = super().forward(**kwargs)
            if kwargs["input_ids"].shape[0] == n and kwargs["input_ids"][0, 0] == 2:  # the KL batch
                out.log_probs = kl_per_token
            return out

    trainer = object.__new__(KTOTrainer)
    _trl_common(trainer, TwoHeaded(per_token))
    trainer.calculate_KL, trainer.loss_type, trainer.beta = True, "kto", beta
    trainer.desirable_weight, trainer.undesirable_weight = 1.0, 1.33
    ids = torch.ones(n, t_len, dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": torch.ones(n, t_len), "completion_mask": completion_mask,
              "KL_input_ids": ids * 2, "KL_attention_mask": torch.ones(n, t_len), "KL_completion_mask": completion_mask,
              "label": label, "ref_logps": ref, "ref_KL_logps": ref_kl}
    theirs = trainer._compute_loss(trainer.model, inputs, return_outputs=False)

    logps, kl_logps = per_token.sum(1), kl_per_token.sum(1)
    kl = kto_kl_estimate(kl_logps, ref_kl)
    assert kl.item() == pytest.approx(trainer._metrics["train"]["kl"][0], abs=1e-5)
    ours = kto_loss((logps - ref)[label], (logps - ref)[~label], kl, beta, 1.0, 1.33).mean()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-4)


def test_reward_loss_matches_trl():
    from trl import RewardTrainer

    g = torch.Generator().manual_seed(11)
    scores = torch.randn(8, 1, generator=g) * 2
    margin = torch.rand(4, generator=g)

    class Scorer(nn.Module):
        def forward(self, **kwargs):
            return SimpleNamespace(logits=scores)

    trainer = object.__new__(RewardTrainer)
    _trl_common(trainer, Scorer())
    trainer.args = SimpleNamespace(center_rewards_coefficient=None)
    for m in (margin, None):
        inputs = {"input_ids": torch.ones(8, 3, dtype=torch.long), "attention_mask": torch.ones(8, 3)}
        if m is not None:
            inputs["margin"] = m
        theirs = trainer.compute_loss(trainer.model, inputs)
        ours = bradley_terry_loss(scores[:4, 0], scores[4:, 0], m).mean()
        assert ours.item() == pytest.approx(theirs.item(), abs=1e-4)
