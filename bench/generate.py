"""Generation speed on the bundled SmolLM2-135M: transformers, tunelab's decode loop, llama.cpp.

Rows (greedy, same prompt and token budget within each group, ratios against the first row of
the group, all measured in this run):

* plain: transformers ``generate`` vs tunelab without KV cache vs tunelab with KV cache;
* extraction: tunelab with cache vs + prompt-lookup drafting, on a request the model answers by
  copying the prompt and on one it answers by paraphrasing (where drafting can only cost);
* shared system prompt: first request (cold) vs a different question reusing the context
  cache of the long system prompt (time to first token is the number that moves);
* plain group, when llama-cpp-python is installed: llama.cpp on GGUF files that tunelab exports
  from the same weights (f16 and q8_0; same prompt token ids), so the ratio is engine against engine.

Greedy speculation and context caching must not change the output: each row checks that its
tokens equal the reference's. Run: ``python bench/generate.py [--tokens 48]``; results go to
``bench/results/generate.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from tunelab.config import ModelArgs
from tunelab.infer import Generator, PrefixCache, SamplingParams, Speculation
from tunelab.models.load import load_model

ROOT = Path(__file__).resolve().parents[1]
DOC = (
    "Invoice 4471-B. Customer: Marta Quintana, 18 Rue des Lilas, 69003 Lyon, France. Order date: 2024-03-14. "
    "Items: 3 x ceramic mug (blue), 1 x teapot 1.2 L, 2 x linen napkins. Total: 74.50 EUR, paid by card. "
    "Delivery: standard, expected 2024-03-19. Contact: marta.quintana@example.org, phone +33 4 72 00 11 22."
)
SYSTEM = ("You are the support assistant of a small homeware shop. Policies: " + " ".join(
    f"Rule {i}: answer politely, cite the order number, never promise refunds above the order total, "
    "and escalate damaged deliveries to a human within one business day." for i in range(1, 9)))


@dataclass
class Row:
    group: str
    name: str
    new_tokens: int
    seconds: float
    ttft: float
    same_tokens: bool | None
    note: str = ""

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def chat(tokenizer, user: str, system: str | None = None) -> list[int]:
    rows = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    text = tokenizer.apply_chat_template(rows, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def hf_row(model, prompt, n) -> tuple[Row, list[int]]:
    ids = torch.tensor([prompt])
    start = time.perf_counter()
    first = model.generate(ids, max_new_tokens=1, do_sample=False)  # TTFT of generate = one-token call
    ttft = time.perf_counter() - start
    start = time.perf_counter()
    out = model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)
    seconds = time.perf_counter() - start
    tokens = out[0, len(prompt) :].tolist()
    assert first[0, -1].item() == tokens[0]
    return Row("plain", "transformers generate", len(tokens), seconds, ttft, True), tokens


def ours(gen: Generator, prompt, n, group, name, ref, **kwargs) -> tuple[Row, list[int]]:
    result = gen.generate(prompt, SamplingParams(max_new_tokens=n), **kwargs)
    t = result.timings
    note = f"accepted {t.accepted}/{t.drafted} drafts, {t.forward_passes} forwards" if t.drafted else ""
    if t.cached_prompt_tokens:
        note = f"{t.cached_prompt_tokens}/{t.prompt_tokens} prompt tokens from cache"
    same = None if ref is None else result.tokens == ref[: len(result.tokens)]
    return Row(group, name, t.new_tokens, t.total, t.time_to_first_token, same, note), result.tokens


def llama_cpp_rows(model, tokenizer, prompt: list[int], n: int, ref: list[int]) -> list[Row]:
    """llama.cpp on GGUF files exported by tunelab from the same weights (f16 and q8_0), same prompt ids."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return [Row("plain", "llama.cpp", 0, 0, 0, None, 'skipped: pip install -e ".[llama]"')]
    import tempfile

    from tunelab.export.gguf_export import write_gguf
    from tunelab.models.merge import MergedRun, eos_token_ids

    rows = []
    merged = MergedRun(model, tokenizer, None, eos_token_ids(tokenizer, model.generation_config))
    with tempfile.TemporaryDirectory() as tmp:
        for quant in ("f16", "q8_0"):
            path = Path(tmp) / f"bundled-{quant}.gguf"
            write_gguf(merged, path, quant, "bundled")
            llm = Llama(model_path=str(path), n_ctx=2048, verbose=False, n_threads=torch.get_num_threads())
            for _ in llm.generate(prompt[:8], temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
                break  # warm-up, not measured
            tokens: list[int] = []
            start = time.perf_counter()
            ttft = 0.0
            for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
                ttft = ttft or time.perf_counter() - start
                tokens.append(int(token))
                if len(tokens) == n:
                    break
            seconds = time.perf_counter() - start
            rows.append(Row("plain", f"llama.cpp, tunelab GGUF {quant}", len(tokens), seconds, ttft,
                            tokens == ref[: len(tokens)], "greedy on the exported file"))
    return rows


def run(n: int) -> list[Row]:
    torch.manual_seed(0)
    model, tokenizer = load_model(ModelArgs(name="smollm2-135m-instruct"), device="cpu")
    model.eval()
    prompt = chat(tokenizer, "Write a short story about a lighthouse keeper who befriends a seagull.")
    rows: list[Row] = []
    model.generate(torch.tensor([prompt]), max_new_tokens=2, do_sample=False)  # warm-up, not measured
    hf, ref = hf_row(model, prompt, n)
    rows.append(hf)
    no_cache = Generator(model, tokenizer, use_cache=False)
    cached = Generator(model, tokenizer)
    rows.append(ours(no_cache, prompt, n, "plain", "tunelab, no KV cache", ref)[0])
    rows.append(ours(cached, prompt, n, "plain", "tunelab, KV cache", ref)[0])

    # Prompt lookup pays off only when the answer copies the prompt: the 135M model copies on the
    # first request and paraphrases (drafts rejected, extra verify cost) on the second.
    for group, ask in (("extraction (copies)", "Repeat the invoice above word for word."),
                       ("extraction (paraphrases)", "Copy the customer's full address and contact line exactly.")):
        extract = chat(tokenizer, f"{DOC}\n\n{ask}")
        base_row, base_tokens = ours(cached, extract, n, group, "tunelab, KV cache", None)
        rows.append(base_row)
        rows.append(ours(cached, extract, n, group, "tunelab + prompt lookup", base_tokens,
                         speculation=Speculation("prompt_lookup", num_tokens=6, max_ngram=3))[0])

    shared = Generator(model, tokenizer, prefix_cache=PrefixCache())
    q1 = chat(tokenizer, "My order 4471-B arrived broken. What now?", SYSTEM)
    q2 = chat(tokenizer, "Can I change the delivery address of order 4471-B?", SYSTEM)
    ref2 = cached.generate(q2, SamplingParams(max_new_tokens=n)).tokens
    rows.append(ours(shared, q1, n, "shared system prompt", "first request (cold cache)", None)[0])
    rows.append(ours(shared, q2, n, "shared system prompt", "other question, context cache", ref2)[0])
    rows[3:3] = llama_cpp_rows(model, tokenizer, prompt, n, ref)  # after the plain group's rows
    return rows


def show(rows: list[Row]) -> Table:
    table = Table(title="generation on SmolLM2-135M (CPU, greedy)")
    for col in ("group", "engine", "new tokens", "tokens/s", "× first of group", "TTFT ms", "TTFT ×", "same tokens",
                "note"):
        table.add_column(col, justify="right" if col not in ("group", "engine", "note") else "left")
    firsts: dict[str, Row] = {}
    for r in rows:
        base = firsts.setdefault(r.group, r)
        speed = f"{r.tokens_per_s / base.tokens_per_s:.2f}" if base.tokens_per_s and r.new_tokens else "-"
        ttft = f"{r.ttft / base.ttft:.2f}" if base.ttft and r.new_tokens else "-"
        same = "-" if r.same_tokens is None else ("yes" if r.same_tokens else "NO")
        table.add_row(r.group, r.name, str(r.new_tokens), f"{r.tokens_per_s:.1f}", speed, f"{r.ttft * 1000:.0f}",
                      ttft, same, r.note)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per request")
    args = parser.parse_args()
    rows = run(args.tokens)
    Console(width=170).print(show(rows))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    payload = [asdict(r) | {"tokens_per_s": r.tokens_per_s} for r in rows]
    (out / "generate.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
