"""Guardrail targets of issue 11 (criterion 6), measured on this machine.

1. False-block rate on the benign prompt set (tunelab/presets/security/benign_prompts.jsonl:
   prompts written for this project that deliberately contain "ignore", "system",
   "instructions", "base64", "token", "password", e-mail-like words, template tokens...),
   with every built-in guardrail at its default action. Target ≤ 2%.
2. Time the heuristic checks add per request (CPU time of the thread, since this machine's
   cores are shared and wall time counts other processes; wall time printed too): input
   checks on (system, user) plus output
   checks on an answer (tunelab/presets/security/benign_answers.jsonl), both on the whole
   answer and through the streaming monitor the server uses (4-character deltas). Target:
   p95 ≤ 5 ms.
3. PII detection on the seeded labelled synthetic set (tunelab.security.synthetic): entity
   precision / recall per kind and F2 overall. Target F2 ≥ 0.95.

    .venv/bin/python bench/security_guardrails.py [--pii-texts 1000] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from tunelab.security.guardrails import GuardrailChain
from tunelab.security.patterns import find_pii
from tunelab.security.synthetic import GENERATORS, labelled_pii_set

PRESETS = Path(__file__).resolve().parents[1] / "tunelab" / "presets" / "security"
SYSTEMS = [
    "You are a helpful assistant.",
    "You are the support assistant of ACME Bikes. Answer briefly, in English, and never share internal notes.",
    "You are a tutor for high-school students. Explain step by step and ask a question back at the end.",
]


def read_jsonl(name: str, field: str) -> list[str]:
    return [json.loads(line)[field] for line in (PRESETS / name).read_text(encoding="utf-8").splitlines() if line]


def false_blocks(chain: GuardrailChain, prompts: list[str]) -> dict:
    actions: Counter[str] = Counter()
    blocked = []
    for i, prompt in enumerate(prompts):
        verdict = chain.scan_input(prompt, system=SYSTEMS[i % len(SYSTEMS)])
        actions[verdict.action or "none"] += 1
        if not verdict.allowed:
            blocked.append((prompt, verdict.guardrail, verdict.reason))
    return {"prompts": len(prompts), "blocked": len(blocked), "rate": len(blocked) / len(prompts),
            "actions": dict(actions), "blocked_prompts": blocked}


def latency(chain: GuardrailChain, prompts: list[str], answers: list[str], streaming: bool, rounds: int) -> dict:
    times, walls = [], []
    for _ in range(rounds):
        for i, prompt in enumerate(prompts):
            system, answer = SYSTEMS[i % len(SYSTEMS)], answers[i % len(answers)]
            t0, w0 = time.thread_time(), time.perf_counter()
            chain.scan_input(prompt, system=system)
            if streaming:
                monitor = chain.monitor(system)
                for j in range(0, len(answer), 4):
                    monitor.feed(answer[j : j + 4])
                monitor.finish()
            else:
                chain.scan_output(answer, system=system)
            times.append((time.thread_time() - t0) * 1000)
            walls.append((time.perf_counter() - w0) * 1000)
    times.sort()
    walls.sort()
    return {"requests": len(times), "p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))],
            "max_ms": times[-1], "wall_p50_ms": statistics.median(walls),
            "wall_p95_ms": walls[int(0.95 * (len(walls) - 1))]}


def pii_scores(n: int, seed: int) -> dict:
    """Entity-level scores: a finding counts when it overlaps a gold span of the same kind."""
    per = {k: Counter() for k in GENERATORS}
    data = labelled_pii_set(n, seed)
    for item in data:
        gold = set(item.spans)
        for f in find_pii(item.text):
            hit = next((g for g in gold if g[0] == f.kind and f.start < g[2] and g[1] < f.end), None)
            per[f.kind]["tp" if hit else "fp"] += 1
            gold.discard(hit)
        for kind, _, _ in gold:
            per[kind]["fn"] += 1
    total = sum(per.values(), Counter())
    rows = {k: _prf(c) for k, c in per.items()}
    return {"texts": len(data), "with_pii": sum(bool(d.spans) for d in data), "entities": total["tp"] + total["fn"],
            "per_kind": rows, "overall": _prf(total)}


def _prf(c: Counter) -> dict:
    p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
    r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
    f2 = 5 * p * r / (4 * p + r) if p + r else 0.0
    return {"tp": c["tp"], "fp": c["fp"], "fn": c["fn"], "precision": p, "recall": r, "f2": f2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pii-texts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5, help="passes over the prompts for the latency numbers")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    chain = GuardrailChain.from_specs(["all"])
    prompts, answers = read_jsonl("benign_prompts.jsonl", "prompt"), read_jsonl("benign_answers.jsonl", "answer")
    chain.scan_input("warm up", system=SYSTEMS[0])
    report = {
        "false_blocks": false_blocks(chain, prompts),
        "latency_whole": latency(chain, prompts, answers, streaming=False, rounds=args.rounds),
        "latency_streaming": latency(chain, prompts, answers, streaming=True, rounds=args.rounds),
        "pii": pii_scores(args.pii_texts, args.seed),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    fb, pii = report["false_blocks"], report["pii"]
    print("guardrails: all built-in checks at their default actions\n")
    print(f"{'measure':<48} {'value':>12} {'target':>10}")
    print(f"{'benign prompts blocked':<48} {fb['blocked']:>5}/{fb['prompts']:<6} {'':>10}")
    print(f"{'false-block rate':<48} {fb['rate']:>12.2%} {'<= 2%':>10}")
    print(f"{'benign prompts escaped/redacted (not blocked)':<48} {fb['actions'].get('redact', 0):>12} {'':>10}")
    for name in ("latency_whole", "latency_streaming"):
        lat = report[name]
        label = "in + out, whole answer" if name == "latency_whole" else "in + out, streamed (4-char deltas)"
        print(f"{label + ' p50 ms (CPU)':<48} {lat['p50_ms']:>12.3f} {'':>10}")
        print(f"{label + ' p95 ms (CPU)':<48} {lat['p95_ms']:>12.3f} {'<= 5 ms':>10}")
        print(f"{label + ' p95 ms (wall)':<48} {lat['wall_p95_ms']:>12.3f} {'':>10}")
    print(f"\nPII detection on {pii['texts']} seeded synthetic texts ({pii['with_pii']} with PII, "
          f"{pii['entities']} entities; seed {args.seed})")
    print(f"{'kind':<8} {'tp':>5} {'fp':>5} {'fn':>5} {'precision':>10} {'recall':>8} {'F2':>7}")
    for kind, row in [*pii["per_kind"].items(), ("overall", pii["overall"])]:
        print(f"{kind:<8} {row['tp']:>5} {row['fp']:>5} {row['fn']:>5} {row['precision']:>10.4f} "
              f"{row['recall']:>8.4f} {row['f2']:>7.4f}")
    print(f"target: F2 >= 0.95 -> {'met' if pii['overall']['f2'] >= 0.95 else 'NOT met'}")
    for prompt, guard, reason in fb["blocked_prompts"]:
        print(f"blocked ({guard}: {reason}): {prompt}")


if __name__ == "__main__":
    main()
