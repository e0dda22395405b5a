"""Each detector's sensitivity and specificity, measured on its own labelled outputs.

Why: a lexical judge errs, and an attack success rate read through it is biased by its errors
(a refusal detector that misses 10% of refusals inflates every jailbreak's success). The
labelled sets (``tunelab/presets/redteam/labelled/<detector>.jsonl``, one
``{"output", "label", "params"?, "note"?}`` per line, label ``hit`` / ``miss`` / ``cannot_judge``)
are measured by ``bench/security_detectors.py`` into ``detector_stats.json``; a test recomputes
them so the stored numbers are always the current detector's. The report corrects rates with them
(:mod:`tunelab.security.redteam_stats`).

Counting: on a ``hit`` row a ``cannot_judge`` answer counts as a miss (it did not detect), on a
``miss`` row as a false hit: an abstention never improves the numbers. ``cannot_judge`` rows
are measured apart (how often the detector rightly abstains).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tunelab.errors import SecurityError
from tunelab.presets import preset_path
from tunelab.security.detectors import DETECTORS, Judgement

LABELS = {j.value for j in Judgement}


def redteam_dir() -> Path:
    """The packaged probe library folder (``tunelab/presets/redteam``)."""
    return preset_path("redteam")


def stats_path() -> Path:
    return redteam_dir() / "detector_stats.json"


@dataclass(frozen=True)
class DetectorStats:
    """Confusion counts of one detector on its labelled set (positive = the detector's hit class)."""

    detector: str
    tp: int
    fn: int
    tn: int
    fp: int
    abstain_rows: int  # rows labelled cannot_judge
    abstain_correct: int  # of those, how many the detector abstained on

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")

    @property
    def labelled(self) -> int:
        return self.tp + self.fn + self.tn + self.fp

    def to_json(self) -> dict:
        row = asdict(self)
        row.update(labelled=self.labelled, sensitivity=round(self.sensitivity, 4),
                   specificity=round(self.specificity, 4))
        return row


def load_labelled(path: Path) -> list[dict]:
    """Rows of a labelled JSONL file; a malformed row is an error naming its line."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise SecurityError(f"{path} line {number}: not JSON ({err.msg})\n  fix: one JSON object per line") from err
        if not isinstance(row.get("output"), str) or row.get("label") not in LABELS:
            raise SecurityError(f"{path} line {number}: needs a string 'output' and a 'label' in {sorted(LABELS)}"
                                "\n  fix: e.g. {\"output\": \"I can't help with that.\", \"label\": \"hit\"}")
        rows.append(row)
    return rows


def measure(name: str, rows: list[dict]) -> DetectorStats:
    """Run detector ``name`` on labelled ``rows`` and count its agreements."""
    detector = DETECTORS.get(name)
    counts = {"tp": 0, "fn": 0, "tn": 0, "fp": 0, "abstain_rows": 0, "abstain_correct": 0}
    for row in rows:
        got = detector.judge(row["output"], row.get("params", {})).judgement
        label = Judgement(row["label"])
        if label is Judgement.CANNOT_JUDGE:
            counts["abstain_rows"] += 1
            counts["abstain_correct"] += got is Judgement.CANNOT_JUDGE
        elif label is Judgement.HIT:
            counts["tp" if got is Judgement.HIT else "fn"] += 1
        else:
            counts["tn" if got is Judgement.MISS else "fp"] += 1
    return DetectorStats(name, **counts)


def measure_all(folder: Path | None = None) -> dict[str, DetectorStats]:
    """Every registered detector measured on ``folder/labelled/<name>.jsonl``."""
    labelled = (folder or redteam_dir()) / "labelled"
    return {name: measure(name, load_labelled(labelled / f"{name}.jsonl")) for name in DETECTORS}


def load_stats(path: Path | None = None) -> dict[str, DetectorStats]:
    """The stored measurements (``detector_stats.json``) by detector name."""
    path = path or stats_path()
    if not path.is_file():
        raise SecurityError(f"{path}: no detector statistics.\n  fix: run python bench/security_detectors.py")
    data = json.loads(path.read_text(encoding="utf-8"))
    fields = ("tp", "fn", "tn", "fp", "abstain_rows", "abstain_correct")
    return {name: DetectorStats(name, **{f: int(row[f]) for f in fields}) for name, row in data["detectors"].items()}
