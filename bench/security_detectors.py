"""Measure every red-team detector on its labelled outputs and store the numbers with it.

Writes ``tunelab/presets/redteam/detector_stats.json`` (confusion counts, sensitivity,
specificity, abstentions, and the SHA-256 of each labelled file), which ``tunelab redteam``
reads to correct attack success rates. ``tests/security/test_detectors.py`` recomputes the
numbers and fails if the stored ones are stale: rerun this script after changing a detector
or a labelled set.

    python bench/security_detectors.py            # measure, print, write
    python bench/security_detectors.py --check    # exit 1 if the stored numbers are stale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

from tunelab.security.redteam_calibration import measure_all, redteam_dir, stats_path


def current() -> dict:
    """The stats file's content as the detectors and labelled sets are now."""
    labelled = redteam_dir() / "labelled"
    stats = measure_all()
    return {
        "about": "sensitivity/specificity of each red-team detector on labelled/<detector>.jsonl; "
                 "written by bench/security_detectors.py",
        "detectors": {name: s.to_json() for name, s in stats.items()},
        "labelled_sha256": {name: hashlib.sha256((labelled / f"{name}.jsonl").read_bytes()).hexdigest()
                            for name in stats},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored file instead of writing it")
    args = parser.parse_args()
    data = current()
    print(f"{'detector':22} {'labelled':>8} {'sens':>7} {'spec':>7} {'TP':>4} {'FN':>4} {'TN':>4} {'FP':>4}  abstain")
    for name, row in data["detectors"].items():
        print(f"{name:22} {row['labelled']:>8} {row['sensitivity']:>7.4f} {row['specificity']:>7.4f} "
              f"{row['tp']:>4} {row['fn']:>4} {row['tn']:>4} {row['fp']:>4}  "
              f"{row['abstain_correct']}/{row['abstain_rows']}")
    text = json.dumps(data, indent=2) + "\n"
    if args.check:
        stale = not stats_path().is_file() or stats_path().read_text(encoding="utf-8") != text
        print("stale: rerun python bench/security_detectors.py" if stale else "stored numbers are current")
        return int(stale)
    stats_path().write_text(text, encoding="utf-8")
    print(f"wrote {stats_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
