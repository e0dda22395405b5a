"""Ratings math: hand-computed Elo updates, Bradley–Terry closed forms, a synthetic tournament."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunelab.evaluate.arena.ratings import (
    Battle,
    bootstrap_bt,
    bt_ratings,
    expected_score,
    fit_bt,
    leaderboard,
    online_elo,
    win_matrix,
    win_rates,
)


def test_online_elo_hand_computed():
    # K = 4, start 1000, E_a = 1 / (1 + 10^((R_b - R_a) / 400)).
    # 1) A beats B: E_A = 0.5, A = 1000 + 4 (1 - 0.5) = 1002, B = 998.
    # 2) B beats A: E_A = 1 / (1 + 10^(-4/400)) = 1 / (1 + 0.9772372210) = 0.5057562082,
    #    A = 1002 - 4 * 0.5057562082 = 999.9769751671, B = 998 + 2.0230248329 = 1000.0230248329.
    # 3) A ties C: E_A = 1 / (1 + 10^((1000 - 999.9769751671) / 400)) = 0.4999668643,
    #    A += 4 (0.5 - 0.4999668643) = +0.0001325427 -> 999.9771077098, C = 999.9998674573.
    battles = [Battle("A", "B", "a"), Battle("A", "B", "b"), Battle("A", "C", "tie")]
    after1 = online_elo(battles[:1])
    assert after1 == {"A": 1002.0, "B": 998.0}
    after2 = online_elo(battles[:2])
    assert after2["A"] == pytest.approx(999.9769751671, abs=1e-6)
    assert after2["B"] == pytest.approx(1000.0230248329, abs=1e-6)
    after3 = online_elo(battles)
    assert after3["A"] == pytest.approx(999.9771077098, abs=1e-6)
    assert after3["C"] == pytest.approx(999.9998674573, abs=1e-6)
    assert sum(after3.values()) == pytest.approx(3000.0)  # Elo is zero-sum


def test_elo_both_bad_is_a_tie_and_order_matters():
    assert online_elo([Battle("A", "B", "both_bad")]) == {"A": 1000.0, "B": 1000.0}
    # a 400-point favourite is expected to score 10/11 (odds 10:1)
    assert expected_score(1400, 1000) == pytest.approx(10 / 11)
    forward = online_elo([Battle("A", "B", "a"), Battle("A", "B", "b")])
    backward = online_elo([Battle("A", "B", "b"), Battle("A", "B", "a")])
    assert forward["A"] < 1000 < backward["A"]  # the last battle weighs more: why BT is the main rating


def test_win_matrix_and_rates_count_ties_as_half():
    battles = [Battle("A", "B", "a"), Battle("B", "A", "a"), Battle("A", "B", "tie"), Battle("A", "C", "a")]
    wins = win_matrix(battles, ["A", "B", "C"])
    # A-B: A won once as model_a, lost once as model_a (B won as model_a), one tie -> 1.5 : 1.5
    assert wins.tolist() == [[0.0, 1.5, 1.0], [1.5, 0.0, 0.0], [0.0, 0.0, 0.0]]
    rates = win_rates(battles, ["A", "B", "C"])
    assert rates[0, 1] == 0.5 and rates[0, 2] == 1.0 and rates[2, 0] == 0.0
    assert math.isnan(rates[1, 2]) and math.isnan(rates[0, 0])  # never met


def test_bt_two_models_closed_form():
    # Two models: the MLE of P(A beats B) is the observed share, so theta_A - theta_B = ln(3/1)
    # for 3 wins to 1, i.e. 400 log10(3) = 190.85 Elo points, centred on 1000.
    battles = [Battle("A", "B", "a")] * 3 + [Battle("A", "B", "b")]
    r = bt_ratings(battles, ["A", "B"])
    assert r[0] - r[1] == pytest.approx(400 * math.log10(3), abs=0.01)
    assert r.mean() == pytest.approx(1000)
    # a win and a tie is 1.5 : 0.5, the same odds of 3
    r_tie = bt_ratings([Battle("A", "B", "a"), Battle("B", "A", "tie")], ["A", "B"])
    assert r_tie[0] - r_tie[1] == pytest.approx(400 * math.log10(3), abs=0.01)
    anchored = bt_ratings(battles, ["A", "B"], anchor="B")
    assert anchored[1] == 1000 and anchored[0] == pytest.approx(1000 + 400 * math.log10(3), abs=0.01)


def test_bt_fit_is_the_likelihood_maximum():
    rng = np.random.default_rng(3)
    wins = rng.integers(1, 20, size=(4, 4)).astype(float)
    np.fill_diagonal(wins, 0)
    theta = fit_bt(wins)

    def loglik(t):
        d = t[:, None] - t[None, :]
        return float((wins * -np.log1p(np.exp(-d))).sum())

    best = loglik(theta)
    for _ in range(50):  # no nearby point is better: a maximum, and the gradient is ~0
        assert loglik(theta + rng.normal(0, 1e-3, 4)) <= best + 1e-9
    p = 1 / (1 + np.exp(-(theta[:, None] - theta[None, :])))
    assert np.abs((wins - (wins + wins.T) * p).sum(axis=1)).max() < 1e-3


def test_undefeated_model_gets_a_finite_rating():
    r = bt_ratings([Battle("A", "B", "a")] * 5, ["A", "B"])
    assert np.isfinite(r).all() and r[0] > r[1] + 400


def synthetic_battles(true: dict[str, float], n: int, seed: int) -> list[Battle]:
    """Random pairs; A wins with the Elo probability of the true ratings."""
    rng = np.random.default_rng(seed)
    names = list(true)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        p = expected_score(true[names[i]], true[names[j]])
        out.append(Battle(names[i], names[j], "a" if rng.random() < p else "b"))
    return out


def test_synthetic_tournament_recovered_within_intervals():
    true = {"base": 900.0, "sft": 1000.0, "dpo": 1050.0, "big": 1150.0, "bad": 800.0}
    battles = synthetic_battles(true, 3000, seed=11)
    ratings = leaderboard(battles, list(true), rounds=400, seed=0)
    mean = np.mean(list(true.values()))
    for r in ratings:
        target = true[r.model] - mean + 1000  # the fit reports ratings with mean 1000
        assert r.lower <= target <= r.upper, (r, target)
        assert r.upper - r.lower < 60  # 3000 battles pin each rating to a few tens of points
    assert [r.model for r in ratings] == sorted(true, key=lambda m: -true[m])


def test_bootstrap_is_seeded():
    battles = synthetic_battles({"a": 1000.0, "b": 1100.0, "c": 950.0}, 300, seed=1)
    one = bootstrap_bt(battles, ["a", "b", "c"], rounds=50, seed=7)
    two = bootstrap_bt(battles, ["a", "b", "c"], rounds=50, seed=7)
    other = bootstrap_bt(battles, ["a", "b", "c"], rounds=50, seed=8)
    assert np.array_equal(one, two) and not np.array_equal(one, other)
    assert one.shape == (50, 3) and np.allclose(one.mean(axis=1), 1000)


def test_leaderboard_without_battles():
    (only,) = leaderboard([], ["A"])
    assert only.battles == 0 and only.bt == 1000 and math.isnan(only.lower)
    idle = next(r for r in leaderboard([Battle("A", "B", "a")], ["A", "B", "C"], rounds=20) if r.model == "C")
    assert idle.battles == 0 and math.isnan(idle.lower) and math.isnan(idle.upper) and math.isnan(idle.win_rate)
