"""Ratings from pairwise battles: online Elo, a Bradley–Terry fit, bootstrap intervals, win rates.

A *battle* is one comparison of two models on one prompt with an outcome: ``a`` (model_a is
better), ``b``, ``tie`` or ``both_bad``. Both ratings put a model's strength on the Elo scale,
where a gap of ``d`` points means ``P(win) = 1 / (1 + 10^(-d/400))``.

* **Online Elo** (Elo 1978) updates two ratings after every battle, in order:
  ``R_a += K (S_a - E_a)`` with ``E_a = 1 / (1 + 10^((R_b - R_a)/400))``. K = 4 and a start of
  1000 follow Chatbot Arena (Zheng et al. 2023, arXiv:2306.05685; Chiang et al. 2024,
  arXiv:2403.04132), whose small K keeps the rating stable over many votes. Online Elo depends
  on the order of the battles, so it is shown beside, not instead of, the fit below.
* **Bradley–Terry** (Bradley & Terry 1952): the maximum-likelihood strengths ``θ`` of the model
  ``P(i beats j) = σ(θ_i − θ_j)``, order-free, which is why Chatbot Arena moved to it. It is
  fitted here by Newton's method on the concave log-likelihood (a handful of models, so the
  K×K Hessian is tiny) with a very weak ridge ``λ‖θ‖²/2`` (λ = 1e-6 per battle) so a model
  that won every battle gets a large finite rating instead of an infinite one — the role of
  ``C = 1e6`` in FastChat's logistic regression. Ratings are converted to Elo units
  (``400 / ln 10 · θ``) and anchored: the anchor model at 1000, or else the mean at 1000.
* **Ties** (and ``both_bad``, which Chatbot Arena also scores as a tie) count as half a win for
  each side in all of them: the ``S = 1/2`` of Elo, and a half battle each way in the fit.
* **Intervals**: a seeded non-parametric bootstrap over battles (Efron 1979). Battles are
  collapsed to unique ``(a, b, outcome)`` rows with counts, and each replicate draws new counts
  from a multinomial over those rows (FastChat's ``rating_systems.py`` does the same), refits,
  and the 2.5 / 97.5 percentiles of each model's rating form its 95% interval.

Checked against hand-computed Elo updates and against a synthetic tournament whose true
strengths the intervals must cover (tests/arena/test_ratings.py, bench/arena_bt_coverage.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Outcome = Literal["a", "b", "tie", "both_bad"]
OUTCOMES: tuple[str, ...] = ("a", "b", "tie", "both_bad")

ELO_K = 4.0
ELO_INIT = 1000.0
ELO_SCALE = 400.0
ELO_BASE = 10.0
RIDGE = 1e-6
THETA_TO_ELO = ELO_SCALE / math.log(ELO_BASE)  # natural-log strengths → Elo points


@dataclass(frozen=True)
class Battle:
    """One comparison: ``outcome`` says which of ``model_a`` / ``model_b`` was better."""

    model_a: str
    model_b: str
    outcome: Outcome

    @property
    def score_a(self) -> float:
        """Elo's ``S_a``: 1 for a win of ``model_a``, 0 for a loss, 1/2 for a tie or both bad."""
        return {"a": 1.0, "b": 0.0}.get(self.outcome, 0.5)


@dataclass(frozen=True)
class Rating:
    """One model's line of the leaderboard (ratings in Elo points)."""

    model: str
    bt: float
    lower: float
    upper: float
    elo: float
    battles: int
    win_rate: float  # ties count 1/2


def models_of(battles: Iterable[Battle], models: Sequence[str] = ()) -> list[str]:
    """``models`` first (in their order), then any other model met in ``battles`` (sorted)."""
    seen = {m for b in battles for m in (b.model_a, b.model_b)}
    return [*models, *sorted(seen - set(models))]


def expected_score(r_a: float, r_b: float) -> float:
    """Elo's expected score of a player rated ``r_a`` against one rated ``r_b``."""
    return 1.0 / (1.0 + ELO_BASE ** ((r_b - r_a) / ELO_SCALE))


def online_elo(
    battles: Iterable[Battle], models: Sequence[str] = (), *, k: float = ELO_K, init: float = ELO_INIT
) -> dict[str, float]:
    """Elo ratings after playing ``battles`` in order (every model starts at ``init``)."""
    battles = list(battles)
    ratings = dict.fromkeys(models_of(battles, models), init)
    for b in battles:
        e_a = expected_score(ratings[b.model_a], ratings[b.model_b])
        delta = k * (b.score_a - e_a)
        ratings[b.model_a] += delta
        ratings[b.model_b] -= delta  # S_b - E_b = (1 - S_a) - (1 - E_a)
    return ratings


def win_matrix(battles: Iterable[Battle], models: Sequence[str]) -> np.ndarray:
    """``W[i, j]``: wins of model i over model j (ties as 1/2 each way). Shape (K, K)."""
    index = {m: i for i, m in enumerate(models)}
    wins = np.zeros((len(models), len(models)))
    for b in battles:
        i, j, s = index[b.model_a], index[b.model_b], b.score_a
        wins[i, j] += s
        wins[j, i] += 1.0 - s
    return wins


def win_rates(battles: Iterable[Battle], models: Sequence[str]) -> np.ndarray:
    """``M[i, j]``: share of battles between i and j that i won (ties 1/2); NaN where none."""
    wins = win_matrix(battles, models)
    games = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(games > 0, wins / np.where(games > 0, games, 1.0), np.nan)


def fit_bt(wins: np.ndarray, *, ridge: float = RIDGE, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """Bradley–Terry maximum-likelihood strengths (natural-log scale, mean 0) from a win matrix.

    Maximizes ``Σ_ij W_ij log σ(θ_i − θ_j) − (λ N / 2) ‖θ‖²`` (N battles) by Newton's method.

    Args:
        wins: ``(K, K)`` matrix, ``W[i, j]`` = (possibly fractional) wins of i over j.
    """
    k = wins.shape[0]
    games = wins + wins.T
    lam = ridge * max(float(games.sum()) / 2, 1.0)
    theta = np.zeros(k)
    for _ in range(max_iter):
        diff = theta[:, None] - theta[None, :]
        p = 1.0 / (1.0 + np.exp(-diff))  # p[i, j] = P(i beats j)
        grad = (wins - games * p).sum(axis=1) - lam * theta
        w = games * p * p.T  # Fisher information of each pair
        hess = w - np.diag(w.sum(axis=1)) - lam * np.eye(k)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.max(np.abs(step)) < tol:
            break
    return theta - theta.mean()


def to_elo(theta: np.ndarray, models: Sequence[str], anchor: str | None = None) -> np.ndarray:
    """Strengths in Elo points: ``anchor`` at 1000 if given, else the mean at 1000."""
    elo = THETA_TO_ELO * theta
    shift = elo[list(models).index(anchor)] if anchor is not None else elo.mean()
    return elo - shift + ELO_INIT


def bt_ratings(battles: Sequence[Battle], models: Sequence[str], anchor: str | None = None) -> np.ndarray:
    """Bradley–Terry ratings (Elo points) of ``models``."""
    return to_elo(fit_bt(win_matrix(battles, models)), models, anchor)


def bootstrap_bt(
    battles: Sequence[Battle], models: Sequence[str], *, rounds: int = 1000, seed: int = 0, anchor: str | None = None
) -> np.ndarray:
    """Bradley–Terry ratings of ``rounds`` multinomial bootstrap replicates. Shape (rounds, K)."""
    rows = Counter((b.model_a, b.model_b, b.outcome) for b in battles)
    unique = list(rows)
    weights = np.array([rows[r] for r in unique], dtype=float)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(int(weights.sum()), weights / weights.sum(), size=rounds)
    index = {m: i for i, m in enumerate(models)}
    # wins contributed by one battle of each unique row: (U, K, K)
    unit = np.zeros((len(unique), len(models), len(models)))
    for u, (a, b, outcome) in enumerate(unique):
        s = Battle(a, b, outcome).score_a
        unit[u, index[a], index[b]] += s
        unit[u, index[b], index[a]] += 1.0 - s
    out = np.empty((rounds, len(models)))
    for r in range(rounds):
        out[r] = to_elo(fit_bt(np.tensordot(counts[r], unit, axes=1)), models, anchor)
    return out


def leaderboard(
    battles: Sequence[Battle],
    models: Sequence[str] = (),
    *,
    rounds: int = 1000,
    seed: int = 0,
    anchor: str | None = None,
    level: float = 0.95,
) -> list[Rating]:
    """One :class:`Rating` per model, best Bradley–Terry rating first."""
    battles = list(battles)
    models = models_of(battles, models)
    if not battles:
        return [Rating(m, ELO_INIT, math.nan, math.nan, ELO_INIT, 0, math.nan) for m in models]
    bt = bt_ratings(battles, models, anchor)
    boot = bootstrap_bt(battles, models, rounds=rounds, seed=seed, anchor=anchor)
    tail = (1.0 - level) / 2 * 100
    lower, upper = np.percentile(boot, [tail, 100 - tail], axis=0)
    elo = online_elo(battles, models)
    wins = win_matrix(battles, models)
    games = (wins + wins.T).sum(axis=1)
    out = [
        Rating(
            m,
            float(bt[i]),
            float(lower[i]) if games[i] else math.nan,  # no battles: no interval to report
            float(upper[i]) if games[i] else math.nan,
            elo[m],
            int(round(games[i])),
            float(wins[i].sum() / games[i]) if games[i] else math.nan,
        )
        for i, m in enumerate(models)
    ]
    return sorted(out, key=lambda r: -r.bt)
