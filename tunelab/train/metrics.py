"""metrics.jsonl, the PNG plot of loss and learning rate, and accelerate's trackers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, lines past the resumed step are dropped.

    ``write=False`` (every process but the main one in a multi-process run) keeps it off the disk.
    """

    def __init__(self, path: Path, resume_step: int | None = None, *, write: bool = True):
        self.path = path
        self.enabled = write
        if not write:
            return
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and path.exists():
            path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.enabled or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]


def tracker_config(tree: dict[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """The run config as flat ``section.key`` scalars: what every tracker's hyperparameter table takes.

    TensorBoard's ``add_hparams`` refuses nested sections, lists and ``None`` (``ValueError``
    at the first step), so those become dotted keys and JSON text.
    """
    flat: dict[str, int | float | str | bool] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(tracker_config(value, f"{prefix}{key}."))
        elif isinstance(value, bool | int | float | str):
            flat[prefix + key] = value
        else:
            flat[prefix + key] = json.dumps(value)
    return flat


def plot_curves(records: list[dict[str, Any]], out: Path, series: list[tuple[str, str]], title: str) -> Path | None:
    """Plot ``series`` = [(metric key, label)] against step; the learning rate goes on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    drew = False
    for key, label in series:
        pts = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, ms=3, label=label)
            drew = True
    if not drew:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    lr = [(r["step"], r["lr"]) for r in records if "lr" in r]
    if lr:
        ax2 = ax.twinx()
        xs, ys = zip(*lr, strict=True)
        ax2.plot(xs, ys, color="gray", ls="--", lw=1, label="learning rate")
        ax2.set_ylabel("learning rate")
        ax2.legend(loc="upper center", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
