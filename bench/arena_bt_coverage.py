"""Coverage of the arena's Bradley–Terry 95% bootstrap intervals on synthetic tournaments.

Each seed draws a tournament with known strengths (8 models spread over 500 Elo points, random
pairs, the winner drawn with the Elo probability of the true ratings) and fits the arena's
leaderboard (:func:`tunelab.evaluate.arena.ratings.leaderboard`: Bradley–Terry MLE, seeded
multinomial bootstrap). A model is *covered* when its true rating (centred like the fit, mean
1000) lies inside its interval. Issue 10's target: at least 90% of models over 20 seeds.

Run: ``python bench/arena_bt_coverage.py [SEEDS] [BATTLES] [ROUNDS] [TIE_SHARE]``. ``TIE_SHARE``
turns that share of battles into ties (counted as half a win each, as the arena does), to see
that ties do not break coverage.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from tunelab.evaluate.arena.ratings import Battle, expected_score, leaderboard

TRUE = {f"m{i}": 800.0 + 500.0 * i / 7 for i in range(8)}


def tournament(n: int, seed: int, tie_share: float) -> list[Battle]:
    rng = np.random.default_rng(seed)
    names = list(TRUE)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        if rng.random() < tie_share:
            out.append(Battle(names[i], names[j], "tie"))
            continue
        p = expected_score(TRUE[names[i]], TRUE[names[j]])
        out.append(Battle(names[i], names[j], "a" if rng.random() < p else "b"))
    return out


def main() -> None:
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    battles = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    tie_share = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    mean = np.mean(list(TRUE.values()))
    covered = total = 0
    widths = []
    start = time.perf_counter()
    for seed in range(seeds):
        ratings = leaderboard(tournament(battles, seed, tie_share), list(TRUE), rounds=rounds, seed=seed)
        hits = [r.lower <= TRUE[r.model] - mean + 1000 <= r.upper for r in ratings]
        covered, total = covered + sum(hits), total + len(hits)
        widths += [r.upper - r.lower for r in ratings]
        print(f"seed {seed:2d}: {sum(hits)}/{len(hits)} true ratings inside their 95% interval")
    share = covered / total
    print(
        f"\n{seeds} seeds x {len(TRUE)} models, {battles} battles each, {rounds} bootstrap rounds, "
        f"tie share {tie_share:.0%}: coverage {covered}/{total} = {share:.1%} "
        f"(target >= 90%: {'met' if share >= 0.9 else 'NOT met'}); mean interval width {np.mean(widths):.0f} "
        f"Elo points; {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
