"""The lm-eval bridge (``--model tunelab``) against lm-eval's own ``hf`` backend, on the bundled model.

Two checks, both backends in the same process on the same weights (fp32):

* **log-likelihoods**: the bundled ``tunelab_mc`` (160 context/continuation requests) and
  ``tunelab_rolling`` (8 paragraphs) through ``simple_evaluate``; the largest absolute difference
  per request must stay within 1e-4 (target of issue 10), and the metrics must be equal;
* **batched generation**: greedy ``generate_until`` on the ``tunelab_gen`` questions with
  ``until=["\\n\\n", "Question:"]`` and ``--gen-tokens`` new tokens, the ``hf`` backend at its
  automatic batch size (``batch_size=auto``; it probes the largest batch up to ``--max-batch-size``
  with ``max_length``-token forwards before every ``generate_until`` call, timed separately),
  tunelab at ``--batch-size``. Rounds alternate the backends; the best round of each is kept
  (other processes' noise only ever adds time). Outputs must be equal. One OpenMP thread: on a
  shared 2-core machine two spinning threads per process ran ten times slower.

Both use ``max_length=--max-length`` so that the hf backend's batch-size probe stays affordable on
a CPU (at the model's 8192 positions it would try 64 x 8192-token forwards).

Run: ``python bench/eval_harness.py`` (about 15 minutes on a busy 2-core CPU); results go to
``bench/results/eval_harness.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # on a shared CPU two spinning OpenMP threads ran 10x slower

ROOT = Path(__file__).resolve().parents[1]


def compare_loglikelihoods(ours, hf) -> dict:
    from tunelab.evaluate.harness import run_harness

    tasks = ["tunelab_mc", "tunelab_rolling"]
    a = run_harness(ours, tasks, log_samples=True)
    b = run_harness(hf, tasks, log_samples=True)
    diffs, greedy_same, requests = [], 0, 0
    for task in tasks:
        for x, y in zip(
            sorted(a["samples"][task], key=lambda s: s["doc_id"]),
            sorted(b["samples"][task], key=lambda s: s["doc_id"]),
            strict=True,
        ):
            for rx, ry in zip(x["resps"], y["resps"], strict=True):
                vx, vy = (rx[0][0], ry[0][0]) if isinstance(rx[0], list | tuple) else (rx[0], ry[0])
                diffs.append(abs(float(vx) - float(vy)))
                requests += 1
                if isinstance(rx[0], list | tuple):
                    greedy_same += rx[0][1] == ry[0][1]
    metrics = {
        t: {
            k: (a["results"][t][k], b["results"][t][k])
            for k in a["results"][t]
            if k.endswith(",none") and "stderr" not in k
        }
        for t in tasks
    }
    return {
        "requests": requests,
        "max_abs_diff": max(diffs),
        "mean_abs_diff": sum(diffs) / len(diffs),
        "is_greedy_equal": greedy_same,
        "metrics_ours_vs_hf": metrics,
    }


def generation_requests(tokens: int):
    from lm_eval.api.instance import Instance

    from tunelab.presets.evaltasks.task_data import _rows

    kwargs = {"until": ["\n\n", "Question:"], "do_sample": False, "max_gen_toks": tokens}
    return [
        Instance("generate_until", {}, (f"Question: {r['question']}\nAnswer:", dict(kwargs)), i)
        for i, r in enumerate(_rows("generation.jsonl"))
    ]


def time_generation(ours, hf, requests, rounds: int) -> dict:
    best = {"tunelab": float("inf"), "hf": float("inf")}
    outputs = {}
    for _ in range(rounds):
        for name, lm in (("tunelab", ours), ("hf", hf)):
            start = time.perf_counter()
            outputs[name] = lm.generate_until(requests, disable_tqdm=True)
            best[name] = min(best[name], time.perf_counter() - start)
    tok = ours.tokenizer
    new_tokens = sum(len(tok(t, add_special_tokens=False).input_ids) for t in outputs["tunelab"])
    same = sum(x == y for x, y in zip(outputs["tunelab"], outputs["hf"], strict=True))
    return {
        "seconds": best,
        "speedup": best["hf"] / best["tunelab"],
        "requests": len(requests),
        "equal_outputs": same,
        "new_tokens_kept": new_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--max-batch-size", type=int, default=16, help="upper bound of hf's batch_size=auto probe")
    parser.add_argument("--batch-size", type=int, default=16, help="tunelab's rows per batch")
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_harness.json"))
    args = parser.parse_args()

    from lm_eval.models.huggingface import HFLM

    from tunelab.evaluate.harness import TunelabLM
    from tunelab.models.resolve import resolve_model

    folder = str(resolve_model(args.model).path)
    ours = TunelabLM(args.model, dtype="fp32", device="cpu", batch_size=args.batch_size, max_length=args.max_length)
    hf = HFLM(
        pretrained=folder,
        dtype="float32",
        device="cpu",
        batch_size="auto",
        max_batch_size=args.max_batch_size,
        max_length=args.max_length,
    )
    result = {"model": args.model, "args": vars(args), "torch_threads": __import__("torch").get_num_threads()}
    result["loglikelihood"] = compare_loglikelihoods(ours, hf)
    print(json.dumps(result["loglikelihood"], indent=1), flush=True)

    start = time.perf_counter()
    detected = hf._detect_batch_size()
    result["hf_auto_batch"] = {"batch_size": detected, "probe_seconds": time.perf_counter() - start}
    print(json.dumps(result["hf_auto_batch"]), flush=True)
    requests = generation_requests(args.gen_tokens)
    result["generation_with_probe"] = time_generation(ours, hf, requests, 1)  # the probe dominates: one round
    hf_fixed = HFLM(pretrained=folder, dtype="float32", device="cpu", batch_size=detected, max_length=args.max_length)
    result["generation_at_detected_batch"] = time_generation(ours, hf_fixed, requests, args.rounds)
    print(json.dumps({k: result[k] for k in ("generation_with_probe", "generation_at_detected_batch")}, indent=1))
    ok = result["loglikelihood"]["max_abs_diff"] <= 1e-4 and result["generation_at_detected_batch"]["speedup"] >= 2
    print(
        f"log-likelihood max |diff| {result['loglikelihood']['max_abs_diff']:.2e} (target 1e-4); generation "
        f"{result['generation_at_detected_batch']['speedup']:.2f}x hf at its auto batch {detected} without the "
        f"probe, {result['generation_with_probe']['speedup']:.2f}x with it (target 2x): {'PASS' if ok else 'FAIL'}"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
