"""How held-out is the held-out split of a text corpus, and the perplexity on the part that truly is.

A corpus cut from documents that repeat themselves (the Python reference manual's topics quote
the same grammar and paragraphs under several names) puts some held-out paragraphs in the
training rows too. A recovery run trained on those rows then meets them again at evaluation.
This script splits the corpus as ``tunelab prune`` does (the loop's seeded split), counts the
held-out paragraphs (longer than ``--min-chars``) that also appear in a training row, and measures
each ``--model``'s perplexity on all held-out rows and on the *clean* ones: the rows none of whose
paragraphs appear in training.

Run: ``python bench/heldout_overlap.py --corpus bench/results/prune_corpus_python311_docs.jsonl
--model smollm2-135m-instruct --model bench/results/prune-width-distill/model``
Results: ``bench/results/heldout_overlap.json`` (one entry per corpus).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tunelab.compress.calib import load_calibration, perplexity
from tunelab.config import DataArgs, ModelArgs
from tunelab.models.load import load_model

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def paragraphs(tokenizer, row, min_chars: int) -> set[str]:
    """The row's text (decoded: byte-level BPE decodes exactly) cut at blank lines, long paragraphs only."""
    text = tokenizer.decode(row.input_ids, skip_special_tokens=True)
    return {p.strip() for p in text.split("\n\n") if len(p.strip()) > min_chars}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="a model name or folder (repeat)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--min-chars", type=int, default=80)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    out: dict = {"corpus": args.corpus.name, "models": {}}
    data = None
    for name in args.model:
        model, tokenizer = load_model(ModelArgs(name=name, dtype="fp32", quantization="none"))
        model.eval()
        if data is None:  # the split and the overlap depend on the tokenizer only (one family here)
            data = load_calibration(
                DataArgs(path=str(args.corpus), validation_split=0.1, max_length=args.max_length), tokenizer
            )
            seen = set().union(*(paragraphs(tokenizer, r, args.min_chars) for r in data.calibration))
            held = [paragraphs(tokenizer, r, args.min_chars) for r in data.held_out]
            clean = [r for r, p in zip(data.held_out, held, strict=True) if not p & seen]
            out["held_out_rows"], out["clean_rows"] = len(data.held_out), len(clean)
            out["held_out_paragraphs"] = sum(len(p) for p in held)
            out["paragraphs_also_in_training"] = sum(len(p & seen) for p in held)
            print(
                f"{args.corpus.name}: {out['paragraphs_also_in_training']} of {out['held_out_paragraphs']} held-out "
                f"paragraphs also in training rows; {len(clean)} of {len(data.held_out)} held-out rows are clean",
                flush=True,
            )
        row = {"all": perplexity(model, data), "clean": perplexity(model, data, rows=clean)}
        out["models"][name] = row
        print(f"{name}: perplexity all held-out {row['all']:.3f}, clean rows {row['clean']:.3f}", flush=True)
        del model
    names = list(out["models"])
    for name in names[1:]:
        for part in ("all", "clean"):
            out["models"][name][f"{part}_vs_first"] = out["models"][name][part] / out["models"][names[0]][part]
        print(
            f"{name} vs {names[0]}: all {out['models'][name]['all_vs_first']:.3f}x, "
            f"clean {out['models'][name]['clean_vs_first']:.3f}x"
        )
    results_file = args.results / "heldout_overlap.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results[args.corpus.name] = out
    results_file.write_text(json.dumps(results, indent=2))
    print(f"results: {results_file}")


if __name__ == "__main__":
    main()
