"""``tunelab draft`` on the bundled SmolLM2-135M-Instruct: build time, acceptance rate, greedy speedup.

Runs the same code as the CLI (:func:`tunelab.compress.draft.build_draft`): the target answers the
bundled prompt set (``examples/data/draft_prompts.jsonl``) greedily, a depth-pruned copy is
distilled on those answers, and on held-out prompts of the same set plain greedy decoding and
greedy speculative decoding with the draft are timed back to back in this process (the speedup
is their ratio; outputs must be token-identical). Issue 12's targets: the whole build ≤ 20 min on
this machine, in-domain acceptance ≥ 0.75, greedy speedup ≥ 1.4x.

The machine is shared: the load average before and after is recorded next to the numbers.

Run: ``python bench/draft.py [--layers 8] [--steps 150] [--max-prompts 300] [--num-draft 3]``;
the report goes to ``bench/results/draft-<layers>L.json`` (the draft folder to a temp dir).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from tunelab.compress.draft import DraftOptions, build_draft

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m-instruct")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--max-prompts", type=int, default=300)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--num-draft", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--eval-prompts", type=int, default=12)
    parser.add_argument("--out", default=None, help="keep the draft here (default: a temp dir, removed)")
    args = parser.parse_args()
    options = DraftOptions(
        layers=args.layers,
        steps=args.steps,
        max_prompts=args.max_prompts,
        gen_tokens=args.gen_tokens,
        num_draft=args.num_draft,
        learning_rate=args.lr,
        alpha=args.alpha,
        eval_prompts=args.eval_prompts,
    )
    load_before = os.getloadavg()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "draft"
        report = build_draft(args.target, out, options, overwrite=bool(args.out), log=lambda s: print(s, flush=True))
    wall = time.perf_counter() - start
    result = {
        "command": "python bench/draft.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "out"),
        "wall_s": round(wall, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "torch_threads": __import__("torch").get_num_threads(),
        **report.to_dict(),
    }
    path = ROOT / "bench" / "results" / f"draft-{args.layers}L.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    s = result["speed"]
    print(
        f"build {wall / 60:.1f} min; acceptance {s['acceptance_rate']:.3f}; speedup {s['speedup']:.2f}x; "
        f"identical {s['identical']}; load average {result['load_average_before']} -> {result['load_average_after']}"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
