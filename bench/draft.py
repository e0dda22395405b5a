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
``python bench/draft.py --remeasure DIR --max-prompts 0 --repeats 3`` measures a saved draft again as
``tunelab serve --draft DIR`` loads it, on the same held-out prompts (``bench/results/draft-remeasure.json``).
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
    parser.add_argument("--minutes", type=float, default=None, help="distillation time budget")
    parser.add_argument("--max-prompts", type=int, default=300)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--gen-batch", type=int, default=32)
    parser.add_argument("--num-draft", type=int, default=8)
    parser.add_argument("--min-confidence", type=float, default=0.6)
    parser.add_argument("--head-tokens", type=int, default=8192)
    parser.add_argument("--quantize", default="int8")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--eval-prompts", type=int, default=12)
    parser.add_argument("--eval-tokens", type=int, default=64)
    parser.add_argument("--also-num-draft", type=int, nargs="*", default=[], help="re-measure with these k too")
    parser.add_argument(
        "--also-min-confidence", type=float, nargs="*", default=[], help="re-measure with these thresholds too"
    )
    parser.add_argument("--costs-only", default=None, help="a saved draft folder: only time the forward passes")
    parser.add_argument("--out", default=None, help="keep the draft here (default: a temp dir, removed)")
    parser.add_argument(
        "--remeasure", default=None, help="a saved draft folder: only measure acceptance and speedup again, as served"
    )
    parser.add_argument("--repeats", type=int, default=1, help="--remeasure: measurements in a row")
    parser.add_argument(
        "--levers", action="store_true", help="only time each cost lever on untrained depth-pruned drafts (no build)"
    )
    args = parser.parse_args()
    if args.levers:
        levers = lever_costs(args.target)
        path = ROOT / "bench" / "results" / "draft-levers.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(levers, indent=2))
        for name, value in levers["relative_cost"].items():
            print(f"{name:28s} {value:.3f}")
        print(f"target step {levers['target_step_ms']} ms; load average {levers['load_average']}; wrote {path}")
        return
    if args.costs_only:
        costs = [forward_costs(args.target, Path(args.costs_only), k) for k in (2, 4, 6)]
        path = ROOT / "bench" / "results" / "draft-costs.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"load_average": os.getloadavg(), "costs": costs}, indent=2))
        for row in costs:
            print(json.dumps(row))
        return
    options = DraftOptions(
        layers=args.layers,
        steps=args.steps,
        minutes=args.minutes,
        max_prompts=args.max_prompts,
        gen_tokens=args.gen_tokens,
        gen_batch=args.gen_batch,
        num_draft=args.num_draft,
        min_confidence=args.min_confidence,
        head_tokens=args.head_tokens,
        quantize=args.quantize,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        alpha=args.alpha,
        eval_prompts=args.eval_prompts,
        eval_tokens=args.eval_tokens,
    )
    if args.remeasure:  # as `tunelab serve --draft` loads it, on the held-out prompts the build measured
        rows = [
            {**remeasure(args.target, Path(args.remeasure), options), "load_average": os.getloadavg()}
            for _ in range(args.repeats)
        ]
        path = ROOT / "bench" / "results" / "draft-remeasure.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"draft": args.remeasure, "rows": rows}, indent=2))
        for row in rows:
            print(f"acceptance {row['acceptance_rate']:.3f} ({row['accepted']} / {row['drafted']}), "
                  f"speedup {row['speedup']:.2f}x ({row['target_s']:.1f} s alone, {row['speculative_s']:.1f} s with "
                  f"the draft), identical {row['identical']}")
        print(f"wrote {path}")
        return
    load_before = os.getloadavg()
    start, cpu_start = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "draft"
        report = build_draft(args.target, out, options, overwrite=bool(args.out), log=lambda s: print(s, flush=True))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        other_k = [remeasure(args.target, out, options, num_draft=k) for k in args.also_num_draft]
        other_k += [remeasure(args.target, out, options, min_confidence=c) for c in args.also_min_confidence]
    result = {
        "command": "python bench/draft.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "out"),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),  # this process's CPU time: what the build costs without the other tenants
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "torch_threads": __import__("torch").get_num_threads(),
        "cpu_capability": __import__("torch").backends.cpu.get_cpu_capability(),  # AVX512: bf16 training if faster
        **report.to_dict(),
        "other_num_draft": other_k,
    }
    path = ROOT / "bench" / "results" / f"draft-{args.layers}L.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    s = result["speed"]
    print(
        f"build {wall / 60:.1f} min; acceptance {s['acceptance_rate']:.3f}; speedup {s['speedup']:.2f}x; "
        f"identical {s['identical']}; load average {result['load_average_before']} -> {result['load_average_after']}"
    )
    for row in other_k:
        print(
            f"num_draft {row['num_draft']}, min_confidence {row['min_confidence']}: "
            f"acceptance {row['acceptance_rate']:.3f}; speedup {row['speedup']:.2f}x; "
            f"identical {row['identical']}"
        )
    print(f"wrote {path}")


def forward_costs(target: str, draft_dir: Path, num_draft: int, repeats: int = 15) -> dict:
    """What one speculative step costs on this machine, in target 1-token steps: a draft 1-token step
    (as served: its recipe's head, int8 and lean runner), a target verify pass over ``num_draft + 1``
    tokens with the default kernels and with few-row products (:mod:`tunelab.infer.few_rows`);
    and the speedup they allow when every drafted token is accepted, ``(k + 1) / (k * draft + verify)``.
    All are timed in turn in each round (a busy machine slows them alike) and the medians kept."""
    import copy
    import statistics

    from tunelab.compress.draft import load_target, render
    from tunelab.infer.cache import KVState
    from tunelab.infer.drafting import draft_state, load_draft
    from tunelab.infer.few_rows import use_few_row_products

    model, tokenizer = load_target(target, "cpu")
    few = copy.deepcopy(model)
    use_few_row_products(few)
    prompt = render(tokenizer, "Explain magnets in two sentences.")
    states = {
        "target_step": (KVState(model), 1),
        "draft_step": (draft_state(load_draft(draft_dir, "cpu")), 1),
        "verify": (KVState(model), num_draft + 1),
        "verify_few_rows": (KVState(few), num_draft + 1),
    }
    for state, _ in states.values():
        state.logits(prompt)
    times: dict[str, list[float]] = {name: [] for name in states}
    for r in range(repeats):
        for name, (state, width) in states.items():
            extra = [100 + (r * 7 + i) % 900 for i in range(width)]  # new tokens each round: no cache hit
            start = time.perf_counter()
            state.logits(prompt + extra, last=width)  # the cache holds the prompt: only `extra` runs
            times[name].append(time.perf_counter() - start)
    step = statistics.median(times["target_step"])
    costs = {name: statistics.median(times[name]) / step for name in states if name != "target_step"}
    best = (num_draft + 1) / (num_draft * costs["draft_step"] + costs["verify_few_rows"])
    return {
        "num_draft": num_draft,
        "target_step_ms": round(step * 1000, 1),
        "relative_cost": costs,
        "speedup_if_all_accepted": best,
    }


def lever_costs(target: str, repeats: int = 12) -> dict:
    """Each cost lever alone, in target 1-token steps (medians of rounds that time every variant in turn):
    the verify pass over 2-7 tokens with the default kernels and with few-row products; a draft step of
    the first 4, 6, 8 layers through transformers (fp32, full head) and through the lean runner (fp32 or
    int8, full head or the 8,192 most frequent tokens). Costs do not depend on training: the drafts are
    untrained copies."""
    import copy
    import statistics

    from tunelab.compress.draft import load_target, render
    from tunelab.compress.prune import drop_layers
    from tunelab.infer.cache import KVState
    from tunelab.infer.drafting import restrict_head
    from tunelab.infer.few_rows import use_few_row_products
    from tunelab.infer.lean import LeanState

    model, tokenizer = load_target(target, "cpu")
    few = copy.deepcopy(model)
    use_few_row_products(few)
    vocab = model.get_output_embeddings().weight.shape[0]
    prompt = render(tokenizer, "Explain magnets in two sentences.") + [i % vocab for i in range(1000, 1060)]
    jobs: dict[str, tuple] = {"target_step": (KVState(model), 1)}
    for n in (2, 3, 4, 5, 7):
        jobs[f"verify_{n}"] = (KVState(model), n)
        jobs[f"verify_{n}_few_rows"] = (KVState(few), n)
    total = len(model.model.layers)
    for layers in [n for n in (4, 6, 8) if n < total] or [1]:  # (1 for a smoke run on tiny)
        draft = drop_layers(copy.deepcopy(model), list(range(layers, total)))
        small = restrict_head(copy.deepcopy(draft), range(min(8192, vocab)))
        jobs[f"draft{layers}_transformers_fp32"] = (KVState(draft), 1)
        jobs[f"draft{layers}_lean_fp32"] = (LeanState(draft), 1)
        jobs[f"draft{layers}_lean_fp32_head8k"] = (LeanState(small), 1)
        jobs[f"draft{layers}_lean_int8"] = (LeanState(draft, "int8"), 1)
        jobs[f"draft{layers}_lean_int8_head8k"] = (LeanState(small, "int8"), 1)
    for state, _ in jobs.values():
        state.logits(prompt)
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for r in range(repeats):
        for name, (state, width) in jobs.items():
            extra = [(100 + (r * 7 + i) % 900) % vocab for i in range(width)]
            start = time.perf_counter()
            state.logits(prompt + extra, last=width)
            times[name].append(time.perf_counter() - start)
    step = statistics.median(times["target_step"])
    return {
        "command": f"python bench/draft.py --levers --target {target}",
        "target_step_ms": round(step * 1000, 1),
        "relative_cost": {k: round(statistics.median(v) / step, 4) for k, v in times.items() if k != "target_step"},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch_threads": __import__("torch").get_num_threads(),
    }


def remeasure(target: str, out: Path, options: DraftOptions, **changes) -> dict:
    """The saved draft (as served: its recipe) measured again with other ``num_draft`` / ``min_confidence``."""
    from dataclasses import asdict, replace

    from tunelab.compress.draft import DEFAULT_PROMPTS, load_target, measure_speed, read_prompts, split_prompts
    from tunelab.infer.drafting import load_draft
    from tunelab.presets import preset_path

    options = replace(options, **changes)
    model, tokenizer = load_target(target, "cpu")
    draft = load_draft(out, "cpu")
    draft.draft_runtime = replace(
        draft.draft_runtime, num_draft=options.num_draft, min_confidence=options.min_confidence
    )
    _, held_out = split_prompts(read_prompts(options.prompts or preset_path(DEFAULT_PROMPTS)), options)
    speed = measure_speed(model, draft, tokenizer, held_out, options)
    return {
        **asdict(speed),
        "min_confidence": options.min_confidence,
        "acceptance_rate": speed.acceptance_rate,
        "speedup": speed.speedup,
    }


if __name__ == "__main__":
    main()
