"""Distillation divergences: hand-computed values, masking, temperature, the top-k buckets, and
equality with TRL's ``GKDTrainer.generalized_jsd_loss`` (trl 1.x: β = 0 forward KL, β = 1 reverse)."""

from __future__ import annotations

import math
import os
import typing

import pytest
import torch

from tunelab.methods.args import DistillArgs
from tunelab.methods.distill_losses import (
    DIVERGENCES,
    forward_kl,
    generalized_jsd,
    masked_mean_divergence,
    reverse_kl,
    teacher_topk,
    topk_buckets,
)

# Teacher p = (1/2, 1/2), student q = (1/4, 3/4).
P = torch.tensor([[0.5, 0.5]]).log()
Q = torch.tensor([[0.25, 0.75]]).log()


def test_forward_and_reverse_kl_by_hand():
    # KL(p||q) = 1/2 ln(0.5/0.25) + 1/2 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3) = 0.143841
    assert forward_kl(Q, P).item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-6)
    assert forward_kl(Q, P).item() == pytest.approx(0.143841, abs=1e-6)
    # KL(q||p) = 1/4 ln(0.25/0.5) + 3/4 ln(0.75/0.5) = -0.173287 + 0.304099 = 0.130812
    assert reverse_kl(Q, P).item() == pytest.approx(0.130812, abs=1e-6)


def test_generalized_jsd_by_hand_and_its_limits():
    # M = (0.375, 0.625); KL(p||M) = 0.5 ln(4/3) + 0.5 ln(0.8) = 0.032269,
    # KL(q||M) = 0.25 ln(2/3) + 0.75 ln(1.2) = 0.035375; JSD(0.5) = (0.032269 + 0.035375) / 2 = 0.033822
    kl_pm = 0.5 * math.log(4 / 3) + 0.5 * math.log(0.8)
    kl_qm = 0.25 * math.log(2 / 3) + 0.75 * math.log(1.2)
    assert generalized_jsd(Q, P, 0.5).item() == pytest.approx(0.5 * kl_pm + 0.5 * kl_qm, abs=1e-6)
    assert generalized_jsd(Q, P, 0.5).item() == pytest.approx(0.033822, abs=1e-6)
    # beta = 0.25: M = 0.25 p + 0.75 q = (0.3125, 0.6875)
    m = (0.3125, 0.6875)
    by_hand = 0.25 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) + 0.75 * (
        0.25 * math.log(0.25 / m[0]) + 0.75 * math.log(0.75 / m[1])
    )
    assert generalized_jsd(Q, P, 0.25).item() == pytest.approx(by_hand, abs=1e-6)
    assert generalized_jsd(Q, P, 0.0).item() == pytest.approx(forward_kl(Q, P).item(), abs=1e-7)
    assert generalized_jsd(Q, P, 1.0).item() == pytest.approx(reverse_kl(Q, P).item(), abs=1e-7)
    assert generalized_jsd(P, P, 0.5).item() == pytest.approx(0.0, abs=1e-7)


def test_masked_mean_uses_trained_positions_and_temperature():
    # position 0: teacher logits (0, 0), student (0, ln 3) -> q = (1/4, 3/4); position 1 untrained
    teacher = torch.tensor([[[0.0, 0.0], [9.0, -9.0]]])
    student = torch.tensor([[[0.0, math.log(3)], [-9.0, 9.0]]])
    labels = torch.tensor([[1, -100]])
    assert masked_mean_divergence(student, teacher, labels, "forward_kl").item() == pytest.approx(0.143841, abs=1e-6)
    # T = 2: q = softmax((0, ln 3)/2) = (1, sqrt 3)/(1 + sqrt 3) = (0.366025, 0.633975)
    q = (1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3)))
    by_hand = 0.5 * math.log(0.5 / q[0]) + 0.5 * math.log(0.5 / q[1])  # 0.037252
    got = masked_mean_divergence(student, teacher, labels, "forward_kl", temperature=2.0).item()
    assert got == pytest.approx(by_hand, abs=1e-6) and got == pytest.approx(0.037252, abs=1e-6)
    # two trained positions: the mean of the two per-token values
    labels2 = torch.tensor([[1, 0]])
    both = masked_mean_divergence(student, teacher, labels2, "reverse_kl").item()
    second = reverse_kl(torch.log_softmax(student[0, 1:], -1), torch.log_softmax(teacher[0, 1:], -1)).item()
    assert both == pytest.approx((0.130812 + second) / 2, abs=1e-5)


def test_topk_buckets_by_hand():
    # teacher p = (0.5, 0.3, 0.2), student q = (0.2, 0.2, 0.6); k = 1 keeps token 0:
    # buckets p' = (0.5, 0.5), q' = (0.2, 0.8); KL(p'||q') = 0.5 ln 2.5 + 0.5 ln 0.625 = 0.223144
    p = torch.tensor([[0.5, 0.3, 0.2]]).log()
    q = torch.tensor([[0.2, 0.2, 0.6]]).log()
    ids, logp, rest = teacher_topk(p, 1)
    assert ids.tolist() == [[0]] and rest.exp().item() == pytest.approx(0.5, abs=1e-6)
    s, t = topk_buckets(q, ids, logp, rest)
    assert s.exp().tolist()[0] == pytest.approx([0.2, 0.8], abs=1e-6)
    assert forward_kl(s, t).item() == pytest.approx(0.5 * math.log(2.5) + 0.5 * math.log(0.625), abs=1e-6)
    # a lower bound of the full divergence (0.5 ln 2.5 + 0.3 ln 1.5 + 0.2 ln(1/3) = 0.360063) ...
    assert forward_kl(q, p).item() == pytest.approx(0.360063, abs=1e-6)
    # ... equal to it when k = V, for every loss, values and gradients
    ids, logp, rest = teacher_topk(p, 3)
    for name in DIVERGENCES:
        full_q = q.clone().requires_grad_(True)
        bucket_q = q.clone().requires_grad_(True)
        full = DIVERGENCES.get(name).fn(full_q, p, 0.5)
        bucketed = DIVERGENCES.get(name).fn(*topk_buckets(bucket_q, ids, logp, rest), 0.5)
        assert bucketed.item() == pytest.approx(full.item(), abs=1e-6)
        full.sum().backward()
        bucketed.sum().backward()
        assert torch.allclose(full_q.grad, bucket_q.grad, atol=1e-6)


def test_loss_names_match_the_config_schema():
    assert typing.get_args(DistillArgs.model_fields["loss"].annotation) == tuple(DIVERGENCES.names())


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_equals_trl_generalized_jsd_loss(beta, temperature):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd import GKDTrainer

    gen = torch.Generator().manual_seed(int(beta * 10 + temperature))
    student = torch.randn(3, 7, 11, generator=gen) * 3
    teacher = torch.randn(3, 7, 11, generator=gen) * 3
    labels = torch.randint(0, 11, (3, 7), generator=gen)
    labels[0, :3] = -100
    labels[2, 5:] = -100
    ours = {1.0: "reverse_kl", 0.0: "forward_kl"}.get(beta, "jsd")
    for name in (ours, "jsd"):
        got = masked_mean_divergence(student, teacher, labels, name, beta=beta, temperature=temperature)
        ref = GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=beta, temperature=temperature)
        assert abs(got.item() - ref.item()) < 1e-5
