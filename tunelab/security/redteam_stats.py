"""Attack success rates with honest uncertainty: Wilson intervals and detector-error correction.

Why both: a red-team category has a few dozen attempts, so a bare rate hides a wide
uncertainty (Wilson's score interval, which stays inside [0, 1] and behaves at 0 and n
successes, unlike the normal approximation). And the rate is read through an imperfect
detector, so the observed rate is biased: with sensitivity ``se`` and specificity ``sp`` the
expected observed rate is ``p·se + (1 − p)(1 − sp)``; solving for ``p`` gives the Rogan–Gladen
estimator ``(p_obs + sp − 1) / (se + sp − 1)`` (Rogan & Gladen 1978), clipped to [0, 1].
The estimator is increasing in ``p_obs`` when ``se + sp > 1``, so the Wilson bounds of the raw
rate map through it to bounds of the corrected one (the detector's own sampling error is not
added: its labelled sets are several times larger than a category).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials (95% by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rogan_gladen(p_obs: float, sensitivity: float, specificity: float) -> float | None:
    """The true rate behind an observed rate read through a detector; None if it cannot be corrected.

    ``None`` when ``sensitivity + specificity <= 1`` (a detector no better than chance carries no
    information) or when either is unknown (NaN).
    """
    youden = sensitivity + specificity - 1
    if not youden > 0:
        return None
    return min(1.0, max(0.0, (p_obs + specificity - 1) / youden))


@dataclass(frozen=True)
class Accuracy:
    """A detector's accuracy *at telling an attack's success*: its stats turned to the attack's side.

    For a detector whose hit is the attack's failure (a refusal) the roles swap: its specificity
    (compliance recognised as compliance) is the sensitivity for success.
    """

    sensitivity: float
    specificity: float

    @classmethod
    def for_success(cls, sensitivity: float, specificity: float, success_on_hit: bool) -> Accuracy:
        return cls(sensitivity, specificity) if success_on_hit else cls(specificity, sensitivity)


@dataclass(frozen=True)
class Rate:
    """Successes out of judged attempts, with the raw and the corrected rate and their 95% intervals."""

    successes: int
    judged: int
    unjudged: int
    raw: float | None
    raw_low: float
    raw_high: float
    corrected: float | None
    corrected_low: float | None
    corrected_high: float | None

    def to_json(self) -> dict:
        def r(x):
            return None if x is None else round(x, 4)

        return {"successes": self.successes, "judged": self.judged, "unjudged": self.unjudged,
                "asr": r(self.raw), "asr_ci95": [r(self.raw_low), r(self.raw_high)],
                "asr_corrected": r(self.corrected),
                "asr_corrected_ci95": None if self.corrected is None else [r(self.corrected_low),
                                                                            r(self.corrected_high)]}


def rate(groups: list[tuple[int, int, Accuracy]], unjudged: int = 0) -> Rate:
    """Combine ``(successes, judged, accuracy)`` groups judged by different detectors into one rate.

    The raw rate and its Wilson interval pool every group. The corrected rate corrects each
    group with its own detector and weights the groups by their judged counts. Its bounds are the
    same weighted sums of the groups' corrected bounds; with G groups each group's Wilson interval
    is taken at level 1 − 0.05/G (Bonferroni), so all G hold together with probability ≥ 95% and
    the weighted bounds cover at least 95% too. For one group this is exactly the 95% Wilson
    interval mapped through Rogan–Gladen.
    """
    k = sum(g[0] for g in groups)
    n = sum(g[1] for g in groups)
    low, high = wilson(k, n)
    raw = k / n if n else None
    corrected = corrected_low = corrected_high = None
    parts = []
    filled = [g for g in groups if g[1] > 0]
    z = NormalDist().inv_cdf(1 - 0.05 / (2 * max(len(filled), 1)))
    for gk, gn, acc in filled:
        glow, ghigh = wilson(gk, gn, z)
        mapped = [rogan_gladen(x, acc.sensitivity, acc.specificity) for x in (gk / gn, glow, ghigh)]
        if None in mapped:
            parts = None
            break
        parts.append((gn, *mapped))
    if parts:
        corrected = sum(w * c for w, c, _, _ in parts) / n
        corrected_low = sum(w * lo for w, _, lo, _ in parts) / n
        corrected_high = sum(w * hi for w, _, _, hi in parts) / n
    return Rate(k, n, unjudged, raw, low, high, corrected, corrected_low, corrected_high)
