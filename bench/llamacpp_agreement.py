"""Greedy agreement of the llama.cpp engine with tunelab's fp32 loop, flash attention on and off.

Why: the llama.cpp engine decodes the f16 GGUF export with its own kernels and f16 arithmetic, so
where the model's top two logits are nearly tied it may pick the other token than the fp32 model
does. This script checks that the engine's flash-attention setting (on, as in llama.cpp's own
tools; ``tunelab.infer.llamacpp.open_llama``) agrees with tunelab's loop as often as llama-cpp-python's
default (off) does, and that every divergence starts at a near-tie of the fp32 reference.

For each of 30 chat prompts on the bundled SmolLM2-135M-Instruct: greedy tokens from tunelab's
``Generator`` (fp32, = transformers ``generate``), and from ``LlamaCppEngine`` on tunelab's own f16
GGUF export with flash attention on and off. A row per divergence gives the step and the fp32
top-2 logit margin there. Not a speed measurement (one thread by default).
Run: ``python bench/llamacpp_agreement.py [--tokens 64] [--threads 1]``; results go to
``bench/results/llamacpp_agreement.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from tunelab.config import ModelArgs
from tunelab.infer import Generator, SamplingParams
from tunelab.models.load import load_model
from tunelab.models.merge import MergedRun, eos_token_ids

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "Write a short story about a lighthouse keeper who befriends a seagull.",
    "What is the capital of France?",
    "Explain photosynthesis to a child.",
    "List three prime numbers and explain why they are prime.",
    "Translate 'good morning' into Spanish, French and German.",
    "Write a haiku about autumn.",
    "How do I reverse a list in Python?",
    "Give me a recipe for pancakes.",
    "Why is the sky blue?",
    "Summarize the plot of Romeo and Juliet.",
    "What are the benefits of exercise?",
    "Tell me a joke about cats.",
    "Describe the water cycle.",
    "What is machine learning?",
    "Write a limerick about a frog.",
    "How many legs does a spider have?",
    "Give three tips for better sleep.",
    "What causes earthquakes?",
    "Write an email asking for a day off.",
    "Explain what a black hole is.",
    "Name five fruits that are red.",
    "What is the difference between weather and climate?",
    "Write a short poem about the sea.",
    "How do vaccines work?",
    "What is the Pythagorean theorem?",
    "Suggest a name for a bakery.",
    "Explain recursion with an example.",
    "Why do leaves change color in autumn?",
    "Write a product description for a blue ceramic mug.",
    "What should I pack for a beach holiday?",
]


def first_difference(ours: list[int], theirs: list[int]) -> int | None:
    """First step where the two greedy sequences differ (None: equal up to the shorter, EOS included)."""
    return next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)


def top2_margin(model, context: list[int]) -> float:
    """fp32 logit of the best next token minus the second best's."""
    with torch.no_grad():
        top = model(torch.tensor([context])).logits[0, -1].topk(2).values
    return float(top[0] - top[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per prompt")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of both engines")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from tunelab.export.gguf_export import write_gguf
    from tunelab.infer.llamacpp import LlamaCppEngine, open_llama

    model, tokenizer = load_model(ModelArgs(name="smollm2-135m-instruct"), device="cpu")
    model.eval()
    merged = MergedRun(model, tokenizer, None, eos_token_ids(tokenizer, model.generation_config))
    reference = Generator(model, tokenizer)
    params = SamplingParams(max_new_tokens=args.tokens)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bundled-f16.gguf"
        write_gguf(merged, path, "f16", "bundled")
        engines = {
            f"flash attention {'on' if flash else 'off'}": LlamaCppEngine(
                open_llama(path, n_ctx=2048, n_threads=args.threads, flash_attn=flash),
                tokenizer,
                "bundled",
                merged.eos_token_ids,
            )
            for flash in (True, False)
        }
        results = {name: {"identical": 0, "divergences": []} for name in engines}
        for text in PROMPTS:
            rows = [{"role": "user", "content": text}]
            ids = tokenizer(tokenizer.apply_chat_template(rows, add_generation_prompt=True, tokenize=False),
                            add_special_tokens=False)["input_ids"]
            ours = reference.generate(ids, params).tokens
            for name, engine in engines.items():
                engine.llm.reset()
                theirs = engine.stream("bundled", ids, params).collect().tokens
                step = first_difference(ours, theirs)
                if step is None:
                    results[name]["identical"] += 1
                    continue
                margin = top2_margin(model, ids + ours[:step])
                results[name]["divergences"].append({"prompt": text, "step": step, "fp32_top2_margin": margin})
    for name, result in results.items():
        print(f"llama.cpp f16, {name}: greedy tokens identical to tunelab's fp32 loop on "
              f"{result['identical']}/{len(PROMPTS)} prompts ({args.tokens} new tokens)")
        for d in result["divergences"]:
            print(f"  differs at step {d['step']:>2} of {d['prompt']!r}: fp32 top-2 margin {d['fp32_top2_margin']:.4f}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "llamacpp_agreement.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
