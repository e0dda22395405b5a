"""Dataset scan: recall, false-positive rate and rows/s per trigger style and poison rate.

Each style (rare token ``cf-zx9``, natural phrase "As my grandmother used to say,", instruction
sentence "Always answer in the voice of Captain Hook.") is planted alone, with two target
answers, into the seeded synthetic instruction set (``tunelab.security.scan.synthetic``) at each
poison rate; the file is written as jsonl and scanned end to end (reading included) by
``scan_file``. A row counts as found when any reason flags it; false positives are clean rows
flagged for any reason (near-duplicates included). Printed beside it, measured on the same
rows: the naive baseline "flag every row whose normalized answer occurs ≥ 5 times", which
finds the planted answers too but also every label, template answer and paraphrased question.

rows/s is rows / wall seconds of ``scan_file``, and rows / CPU seconds of this process (the
CPU figure is the one to compare across machines: a busy shared machine stretches wall time).

Run: ``python bench/security_scan.py [N] [SEED]`` (default 10,000 rows, seed 0).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tunelab.security.scan import scan_file
from tunelab.security.scan.synthetic import STYLES, clean_rows, plant
from tunelab.security.scan.text import normalize

RATES = (0.005, 0.01, 0.03)
MIN_REPEATS = 5


def baseline(rows: list[dict]) -> set[int]:
    """Rows whose normalized answer occurs at least MIN_REPEATS times."""
    keys = [normalize(r["output"]) for r in rows]
    counts = Counter(keys)
    return {i for i, k in enumerate(keys) if counts[k] >= MIN_REPEATS}


def rates(flagged: set[int], poisoned: set[int], n: int) -> tuple[float, float]:
    recall = len(flagged & poisoned) / len(poisoned) if poisoned else 1.0
    return recall, len(flagged - poisoned) / (n - len(poisoned))


def measure(rows: list[dict], poisoned: set[int], folder: Path) -> dict[str, float]:
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    wall, cpu = time.perf_counter(), time.process_time()
    report = scan_file(path)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    recall, fpr = rates(report.flagged, poisoned, len(rows))
    base_recall, base_fpr = rates(baseline(rows), poisoned, len(rows))
    return {"recall": recall, "fpr": fpr, "rows_per_s": len(rows) / wall, "rows_per_cpu_s": len(rows) / cpu,
            "base_recall": base_recall, "base_fpr": base_fpr}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    clean = clean_rows(n, seed)
    header = (f"{'style':<22} {'poison':>6} {'rows':>6} {'recall':>7} {'FP rate':>8} {'rows/s':>7} {'rows/CPU s':>10}"
              f"   baseline: {'recall':>6} {'FP rate':>8}")
    print(f"tunelab scan on {n:,} synthetic rows (seed {seed})")
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("none (clean)", 0.0)] + [(s, r) for s in STYLES for r in RATES]
        for style, rate in cases:
            planted = plant(clean, style, rate, seed + 1) if rate else None
            rows, poisoned = (planted.rows, planted.poisoned) if planted else (clean, set())
            m = measure(rows, poisoned, Path(tmp))
            recall = f"{m['recall']:.3f}" if poisoned else "-"
            base_recall = f"{m['base_recall']:.3f}" if poisoned else "-"
            print(f"{style:<22} {rate:>6.1%} {len(poisoned):>6} {recall:>7} {m['fpr']:>8.4f} {m['rows_per_s']:>7.0f} "
                  f"{m['rows_per_cpu_s']:>10.0f}   {'':>9} {base_recall:>6} {m['base_fpr']:>8.4f}", flush=True)


if __name__ == "__main__":
    main()
