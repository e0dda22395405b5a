"""The arena's outputs: a plain leaderboard table, a win-rate matrix and a PNG of the intervals.

Plain text (fixed columns, no colour) so a table reads the same on a terminal, in a pipe and in
a file; the PNG is matplotlib on the Agg backend (no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tunelab.evaluate.arena.ratings import Rating


def _num(x: float, fmt: str = "{:.0f}") -> str:
    return "-" if x is None or math.isnan(x) else fmt.format(x)


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Columns padded to their widest cell; the first ``left`` columns left-aligned, the rest right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)]).rstrip() + "\n"


def leaderboard_table(ratings: Sequence[Rating], level: float = 0.95) -> str:
    """``rank model BT 95%-CI ±  Elo battles win-rate``, best first."""
    header = ["rank", "model", "BT", f"{level:.0%} CI", "Elo", "battles", "win rate"]
    rows = [
        [
            str(i),
            r.model,
            _num(r.bt),
            f"{_num(r.lower)}..{_num(r.upper)}",
            _num(r.elo),
            str(r.battles),
            _num(100 * r.win_rate, "{:.1f}%"),
        ]
        for i, r in enumerate(ratings, start=1)
    ]
    return _table(header, rows, left=2)


def winrate_table(models: Sequence[str], rates: np.ndarray) -> str:
    """Row model's win rate against the column model (ties count 1/2); ``-`` where they never met."""
    short = [f"[{i + 1}]" for i in range(len(models))]
    header = ["model", *short]
    rows = [
        [f"[{i + 1}] {m}", *(_num(100 * rates[i, j], "{:.0f}%") for j in range(len(models)))]
        for i, m in enumerate(models)
    ]
    return _table(header, rows)


def winrate_csv(models: Sequence[str], rates: np.ndarray) -> str:
    lines = [",".join(["model", *models])]
    lines += [",".join([m, *("" if math.isnan(x) else f"{x:.4f}" for x in rates[i])]) for i, m in enumerate(models)]
    return "\n".join(lines) + "\n"


def plot_ratings(ratings: Sequence[Rating], path: str | Path, title: str = "Bradley–Terry ratings") -> Path:
    """Horizontal error bars: each model's BT rating and its bootstrap interval, best on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = list(reversed(ratings))
    y = np.arange(len(ordered))
    bt = np.array([r.bt for r in ordered])
    lower = np.array([r.lower if not math.isnan(r.lower) else r.bt for r in ordered])
    upper = np.array([r.upper if not math.isnan(r.upper) else r.bt for r in ordered])
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.5 * len(ordered)))
    ax.errorbar(bt, y, xerr=[bt - lower, upper - bt], fmt="o", color="#1f5fa8", ecolor="#7aa6d6", capsize=4)
    for yi, r in zip(y, ordered, strict=True):
        ax.annotate(f"{r.bt:.0f}", (r.bt, yi), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.margins(y=0.35)  # room for the labels above the top point
    ax.set_yticks(y, [r.model for r in ordered])
    ax.set_xlabel("rating (Elo points), 95% bootstrap interval")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
