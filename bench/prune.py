"""Pruning the bundled SmolLM2-135M: what each method saves, and how far a short recovery brings it back.

Two parts (``--part sizes``, ``--part recover`` or both, the default), and ``--part refit``:

* **sizes**: depth (drop the lowest-scoring layers), width (narrow every MLP) and magnitude (50%
  zeros) pruning of the same base, about 20% of the parameters for the structured ones. For each:
  parameters, safetensors file size and the CPU greedy decode step time (batch 1, ``--decode-tokens``
  fed tokens, KV cache) in three loops (:data:`LOOPS`): tunelab's own step (``KVState``, what ``tunelab
  generate``/``serve`` run), the lean step (``LeanState``, drafts' fused Llama step) and llama.cpp on an
  f16 GGUF, as ratios against the unpruned model measured in the same process. Every variant is
  loaded in every loop at once and they take turns step by step (:func:`interleaved_steps` says why),
  over ``--reps`` rounds of fresh copies; the columns are the median step and the 20th-percentile step.
  Held-out perplexity before any recovery too. The issue's target: a structured prune shrinks the
  file and the decode time by at least 0.8x as much as the parameter count (``shrink = 1 - ratio``;
  the row's ``*_per_param`` columns). Magnitude masks are zeros in dense tensors: they shrink neither
  (the row shows it, and doubles as the control: same shapes as the base, so its time ratio is the
  measurement's own noise).
* **recover**: ``tunelab prune`` itself (:func:`tunelab.compress.pipeline.prune`) on the same data
  with a recovery run (``--recover distill|lora``, ``--recover-steps``), printing the perplexity
  before, after pruning and after recovery, and the recovery's wall time. Target: perplexity
  ≤ 1.15x the base within 30 minutes of CPU recovery.
* **refit**: the width prune to ``--keep`` channels without the least-squares ``down_proj`` refit and
  with it at each ridge of ``--damps`` (held-out perplexity, no recovery).

Data: answers sampled (temperature 1) from the unpruned model for the prompts of
``examples/data/*prompts*.jsonl`` and the quickstart questions, written once to
``bench/results/prune_corpus.jsonl`` (``--corpus-rows`` message rows, 64 answer tokens at most; the
answer tokens are scored). Perplexity on
the model's own samples is ``exp(H + KL(base || pruned))`` per token: the ratio to the base is the
distance the pruning put between the two distributions, which is what recovery must close.
``--corpus python-docs`` measures on real text instead: CPython's reference manual (``pydoc_data.topics``,
:func:`python_manual`); ``--corpus python-docstrings`` on the standard library's docstrings. Both are the kind
of held-out text the pruning literature reports perplexity on.
Results: ``bench/results/prune.json``. Run: ``python bench/prune.py [--part sizes|recover]``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tunelab.compress.calib import load_calibration, perplexity
from tunelab.compress.magnitude import apply_masks, magnitude_masks
from tunelab.compress.prune import drop_layers, layer_scores, lowest
from tunelab.compress.width import (
    channel_importance,
    channels_to_keep,
    down_grams,
    enough_for_refit,
    kept_width,
    prune_channels,
)
from tunelab.config import DataArgs, ModelArgs
from tunelab.infer.cache import KVState
from tunelab.models.load import load_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODEL = "smollm2-135m-instruct"
START = time.perf_counter()
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def prompts() -> list[str]:
    """Distinct user prompts of the example data files (prompt rows and the questions of message rows)."""
    seen: dict[str, None] = {}
    for path in sorted((ROOT / "examples" / "data").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if "prompt" in row and isinstance(row["prompt"], str):
                seen[row["prompt"]] = None
            for m in row.get("messages", [])[:1]:
                if m.get("role") == "user":
                    seen[m["content"]] = None
    return list(seen)


def corpus(
    model, tokenizer, path: Path, rows_wanted: int, max_new_tokens: int = 64, batch: int = 64, per_prompt: int = 1
) -> Path:
    """Message rows: ``rows_wanted`` prompts (a seeded sample) with ``per_prompt`` answers each sampled from
    ``model`` (written once; the held-out split is a seeded sample of these rows)."""
    if path.is_file():
        return path
    torch.manual_seed(0)
    tokenizer.padding_side = "left"
    rows = []
    items = prompts()
    items = random.Random(0).sample(items, min(rows_wanted, len(items))) * per_prompt
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in chunk
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        for prompt, ids in zip(chunk, out[:, enc["input_ids"].shape[1] :], strict=True):
            answer = tokenizer.decode(ids, skip_special_tokens=True).strip()
            if answer:
                messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
                rows.append({"messages": messages})
        print(f"corpus: {len(rows)}/{len(items)} answers", flush=True)
    tokenizer.padding_side = "right"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def python_manual() -> list[str]:
    """The Python reference manual's topics that every CPython ships (``pydoc_data.topics``: what
    ``help("if")`` prints)."""
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def python_docstrings(min_chars: int = 400) -> list[str]:
    """The docstrings (modules, classes, functions) of the standard library's own source, one document per
    module, each docstring of at least ``min_chars`` characters; the test suite and IDLE left out."""
    import ast
    import inspect
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    documents = []
    for source in sorted(root.rglob("*.py")):
        parts = source.relative_to(root).parts
        if parts[0] in ("test", "idlelib", "site-packages", "dist-packages") or "tests" in parts:
            continue
        try:
            tree = ast.parse(source.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef))]
        docs = [inspect.cleandoc(d) for n in nodes if (d := ast.get_docstring(n, clean=False))]
        docs = [d for d in docs if len(d) >= min_chars]
        if docs:
            documents.append("\n\n".join(docs))
    return documents


#: Real-text corpora fixed by the Python version (no download): ``--corpus NAME``.
TEXT_CORPORA = {"python-docs": python_manual, "python-docstrings": python_docstrings}


def text_corpus(path: Path, documents: Callable[[], list[str]], chunk_chars: int = 900, max_rows: int = 700) -> Path:
    """Text rows of real English prose, the ``documents()`` cut at paragraph breaks into rows of about
    ``chunk_chars`` characters; at most ``max_rows`` of them (a seeded sample). Written once: a file
    already at ``path`` is returned without reading the sources again.

    Held-out perplexity on real text is what the pruning literature reports (WikiText for LLM-Pruner,
    ShortGPT): the model did not write it, so unlike its own samples it does not measure the KL alone.
    """
    if path.is_file():
        return path
    rows = []
    for document in documents():
        text = ""
        for paragraph in document.split("\n\n"):
            paragraph = paragraph.strip("\n")
            if not paragraph.strip():
                continue
            if text and len(text) + len(paragraph) > chunk_chars:
                rows.append({"text": text})
                text = ""
            text = f"{text}\n\n{paragraph}" if text else paragraph
        if text:
            rows.append({"text": text})
    if len(rows) > max_rows:
        keep = sorted(random.Random(0).sample(range(len(rows)), max_rows))
        rows = [rows[i] for i in keep]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


WARMUP_STEPS = 4  # each round's first steps pay first-call allocations: fed, not counted


def state_stepper(state, prompt: list[int]) -> Callable[[int], None]:
    """A decode loop on ``state`` (:class:`tunelab.infer.cache.KVState`: tunelab's own step, what
    ``tunelab generate``/``serve`` run; :class:`tunelab.infer.lean.LeanState`: the lean step) after
    ``prompt``: each call feeds one token (KV cache, batch 1, logits of the last position only).

    Fed, not sampled, so every variant decodes the same sequence (a decode step costs the same
    whichever token it is: one row through every weight)."""
    tokens = list(prompt)
    state.logits(tokens)

    def step(token: int) -> None:
        tokens.append(token)
        state.logits(tokens)

    return step


def llama_stepper(llm, prompt: list[int]) -> Callable[[int], None]:
    """llama.cpp's decode loop after ``prompt``: each call evaluates one fed token (KV cache, batch 1)."""
    llm.reset()
    llm.eval(prompt)
    return lambda token: llm.eval([token])


def interleaved_steps(
    steppers: dict[tuple[str, str], Callable[[int], None]], continuation: list[int], shuffle: random.Random
) -> dict[tuple[str, str], list[float]]:
    """For each token of ``continuation``, one step of every ``(loop, variant)`` stepper in a freshly
    shuffled order; the seconds of each counted step (after :data:`WARMUP_STEPS`), per stepper.

    Why step by step: this machine's speed drifts by 20-40% over seconds (shared memory bandwidth);
    timing one variant's whole decode, then the next's, put that drift between the variants (an
    identical copy of the base came out 2-12% slower or faster). Interleaved at ~50 ms, every variant
    sees the same drift, and the identical copy lands within ~1% of the base."""
    times: dict[tuple[str, str], list[float]] = {key: [] for key in steppers}
    order = list(steppers)
    for i, token in enumerate(continuation):
        shuffle.shuffle(order)
        for key in order:
            start = time.perf_counter()
            steppers[key](token)
            if i >= WARMUP_STEPS:
                times[key].append(time.perf_counter() - start)
    return times


def step_columns(prefix: str, rounds: list[list[float]]) -> dict:
    """A decode loop's columns from each round's step times: the median step of all rounds, each
    round's total, and the step at the 20th percentile (a stalled step, from a busy core or a page
    fault, only adds time, so a low quantile of many steps is the step time without the stalls)."""
    steps = [t for times in rounds for t in times]
    return {
        f"{prefix}_step_s": statistics.median(steps),
        f"{prefix}_decode_s_all": [sum(times) for times in rounds],
        f"{prefix}_step_q20_s": statistics.quantiles(steps, n=5)[0],
    }


def write_gguf_file(model, tokenizer, folder: Path, quant: str = "f16") -> Path:
    """The model as a GGUF of type ``quant`` (tunelab's exporter, as ``tunelab export --format gguf --quant``)."""
    from tunelab.export.gguf_export import write_gguf
    from tunelab.models.merge import MergedRun, eos_token_ids

    path = folder / f"model-{quant}.gguf"
    write_gguf(MergedRun(model, tokenizer, None, eos_token_ids(tokenizer, model.generation_config)), path, quant, "x")
    return path


def open_fresh(path: Path, threads: int | None):
    """``path`` in llama.cpp, read into memory (not mapped): a mapped file's page placement alone
    moved decode time by ~6% between two byte-identical copies, so each round loads afresh."""
    from tunelab.infer.llamacpp import open_llama

    return open_llama(path, n_ctx=512, n_threads=threads, use_mmap=False)


def file_bytes(model, folder: Path) -> int:
    model.save_pretrained(folder, safe_serialization=True)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def structured(model, data, drop: int, keep: int | None, refit: bool = True) -> tuple[object, list[int]]:
    """Drop the ``drop`` lowest-scoring layers, then narrow every remaining MLP to ``keep`` channels (in place),
    refitting each ``down_proj`` by least squares unless ``refit`` is False (as ``tunelab prune``)."""
    dropped = lowest(layer_scores(model, data.batches()), drop) if drop else []
    if dropped:
        drop_layers(model, dropped)
    if keep and keep < model.config.intermediate_size:
        tokens = sum(len(row.input_ids) for row in data.calibration)
        refit = refit and enough_for_refit(tokens, model.config.intermediate_size)  # as tunelab prune
        grams = down_grams(model, data.batches()) if refit else None
        prune_channels(model, channels_to_keep(channel_importance(model, data.batches(), grams), keep), grams)
    return model, dropped


def variants_of(args, base, data) -> dict[str, object]:
    """The unpruned model and its depth, width, mixed and magnitude prunes (each a deep copy)."""
    width = base.config.intermediate_size
    out = {"base": base}
    depth, dropped = structured(copy.deepcopy(base), data, args.drop_layers, None)
    out[f"depth -{args.drop_layers} layers {dropped}"] = depth
    keep = kept_width(width, args.keep)
    out[f"width MLP {width}->{keep}"] = structured(copy.deepcopy(base), data, 0, keep)[0]
    for spec in args.mix:
        drop, keep = (int(x) for x in spec.split(","))
        mixed, dropped = structured(copy.deepcopy(base), data, drop, keep)
        name = f"mix -{drop} layers {dropped} + MLP {width}->{keep}" if drop else f"width MLP {width}->{keep}"
        out[name] = mixed
    magnitude = copy.deepcopy(base)
    out["magnitude 50% zeros"] = apply_masks(magnitude, magnitude_masks(magnitude, 0.5, "global"))
    return out


#: The decode loops timed: tunelab's step (transformers' forward, ``tunelab generate``/``serve``), the
#: lean step (tunelab's fused Llama step, what drafts decode with), llama.cpp on a GGUF of ``--gguf-type``.
LOOPS = ("engine", "lean", "llama")


def sizes(args, base, tokenizer, data) -> list[dict]:
    """Depth, width, mixed and magnitude variants of ``base`` vs ``base``: params, file size, decode step
    time in each of :data:`LOOPS` (interleaved step by step), perplexity."""
    from tunelab.infer.lean import LeanState

    variants = variants_of(args, base, data)
    print(f"{base.config.num_hidden_layers} layers; variants: {list(variants)}", flush=True)
    folders = {name: args.results / "prune-sizes" / f"{i}-{name.split()[0]}" for i, name in enumerate(variants)}
    files = {name: file_bytes(model, folders[name]) for name, model in variants.items()}
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    prompt = ids[0].tolist()
    continuation = base.generate(
        ids, do_sample=False, max_new_tokens=args.decode_tokens, min_new_tokens=args.decode_tokens, pad_token_id=0
    )[0, ids.shape[1] :].tolist()
    loops = [loop for loop in LOOPS if not (loop == "llama" and args.no_llama)]
    if args.llama_only:
        loops = ["llama"]
    ggufs = {}
    if "llama" in loops:
        ggufs = {
            name: write_gguf_file(model, tokenizer, folders[name], args.gguf_type) for name, model in variants.items()
        }
    rounds: dict[tuple[str, str], list[list[float]]] = {(loop, name): [] for loop in loops for name in variants}
    shuffle = random.Random(0)
    for r in range(args.reps):
        # Fresh copies and loads each round: each variant decodes from new memory placements.
        fresh = {name: copy.deepcopy(model) for name, model in variants.items()} if loops != ["llama"] else {}
        llms = {name: open_fresh(path, args.llama_threads) for name, path in ggufs.items()}
        steppers = {}
        for loop, name in rounds:
            if loop == "llama":
                steppers[(loop, name)] = llama_stepper(llms[name], prompt)
            else:
                state = KVState(fresh[name]) if loop == "engine" else LeanState(fresh[name])
                steppers[(loop, name)] = state_stepper(state, prompt)
        for key, steps in interleaved_steps(steppers, continuation, shuffle).items():
            rounds[key].append(steps)
        for llm in llms.values():
            llm.close()
        del steppers, fresh, llms
        print(f"round {r + 1}/{args.reps} done ({time.perf_counter() - START:.0f} s)", flush=True)
    rows = []
    base_row = None
    for name, model in variants.items():
        row = {
            "variant": name,
            "params": int(model.num_parameters()),
            "file_bytes": files[name],
            "perplexity": perplexity(model, data),
        }
        keys = ["params", "file_bytes", "perplexity"]
        for loop in loops:
            row.update(step_columns(loop, rounds[(loop, name)]))
            keys += [f"{loop}_step_s", f"{loop}_step_q20_s"]
        base_row = base_row or row
        for key in keys:
            row[f"{key}_ratio"] = row[key] / base_row[key]
        shrink = 1 - row["params_ratio"]
        for key in keys[3:] + ["file_bytes"]:
            label = key.removesuffix("_s").removesuffix("_bytes")
            row[f"{label}_per_param"] = (1 - row[f"{key}_ratio"]) / shrink if shrink > 0 else None
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def refit_sweep(args, base, data) -> list[dict]:
    """Held-out perplexity of the width prune to ``--keep`` channels without refit and with each ``--damps`` ridge."""
    keep = kept_width(base.config.intermediate_size, args.keep)
    grams = down_grams(base, data.batches())
    index = channels_to_keep(channel_importance(base, data.batches(), grams), keep)
    rows = []
    for damp in [None, *args.damps]:
        model = copy.deepcopy(base)
        prune_channels(model, index, None if damp is None else grams, damp or 0.0)
        rows.append({"keep": keep, "refit_damp": damp, "perplexity": perplexity(model, data)})
        print(json.dumps(rows[-1]), flush=True)
        del model
    return rows


def pick(args, base, data) -> list[dict]:
    """Held-out perplexity before recovery of each ``--pick DROP,KEEP`` prune; sets ``args`` to the lowest one's."""
    rows = []
    for spec in args.pick:
        drop, keep = (int(x) for x in spec.split(","))
        model = structured(copy.deepcopy(base), data, drop, keep, args.refit)[0]
        row = {"drop_layers": drop, "keep": keep, "params_ratio": model.num_parameters() / base.num_parameters()}
        width, tokens = base.config.intermediate_size, sum(len(r.input_ids) for r in data.calibration)
        row["refit"] = args.refit and keep < width and enough_for_refit(tokens, width)
        row["perplexity"] = perplexity(model, data)
        rows.append(row)
        print(json.dumps(row), flush=True)
        del model
    best = min(rows, key=lambda r: r["perplexity"])
    args.method = {(True, True): "depth+width", (True, False): "depth", (False, True): "width"}[
        (best["drop_layers"] > 0, best["keep"] < base.config.intermediate_size)
    ]
    args.drop_layers, args.keep = best["drop_layers"] or args.drop_layers, float(best["keep"])
    print(f"picked: --method {args.method} --drop-layers {args.drop_layers} --keep {args.keep:g}", flush=True)
    return rows


def recover(args, corpus_path: Path) -> dict:
    """``tunelab prune`` itself with a recovery run, stopped by its time budget (``--recover-minutes``)."""
    from tunelab.compress.config import load_prune_config
    from tunelab.compress.pipeline import prune

    flags = [
        f"model.name={args.model}",
        f"prune.method={args.method}",
        f"prune.drop_layers={args.drop_layers}",
        f"prune.keep={args.keep}",
        f"prune.calib_rows={args.calib_rows}",
        f"prune.refit={args.refit}",
        f"data.path={corpus_path}",
        "data.validation_split=0.1",
        f"data.max_length={args.max_length}",
        f"recover.recover={args.recover}",
        f"recover.adapter.type={args.recover_adapter}",
        f"recover.training.max_steps={args.recover_steps}",
        f"recover.training.learning_rate={args.lr}",
        f"recover.training.micro_batch_size={args.batch}",
        f"recover.training.warmup_steps={args.warmup}",
        f"recover.training.eval_every={args.eval_every}",
        "recover.training.precision=auto",
        f"out={args.results / f'prune-{args.method}-{args.recover}'}",
    ]
    if args.recover_minutes:
        flags.append(f"recover.training.max_minutes={args.recover_minutes}")
    if args.recover_adapter == "freeze":  # every decoder layer trains; the (tied) embeddings stay as they are
        layers = args.base_layers - (args.drop_layers if "depth" in args.method else 0)
        flags.append(f"recover.adapter.freeze_train_layers={layers}")
    if args.recover == "distill":
        flags += [f"recover.method_args.loss={args.loss}", f"recover.method_args.alpha={args.alpha}"]
        flags += [
            f"recover.method_args.teacher_logits={args.teacher_logits}",
            f"recover.method_args.top_k={args.top_k}",
        ]
    start = time.perf_counter()
    report = prune(load_prune_config(None, flags), overwrite=True)
    out = {
        "method": args.method,
        "drop_layers": args.drop_layers if "depth" in args.method else None,
        "keep": args.keep if "width" in args.method else None,
        "recover": args.recover,
        "adapter": args.recover_adapter,
        "refit": args.refit,
        "teacher_logits": args.teacher_logits,
        "top_k": args.top_k,
        "loss": args.loss,
        "alpha": args.alpha,
        "lr": args.lr,
        "batch": args.batch,
        "max_length": args.max_length,
        "recover_minutes": args.recover_minutes,
        "wall_s": time.perf_counter() - start,
        "stages": [vars(s) for s in report.stages],
        "recovery": report.recovery,
        "removed": {k: v for k, v in report.removed.items() if k != "layer_scores"},
    }
    base = report.stages[0].perplexity
    for s in report.stages:
        print(f"{s.name:>10}: params {s.params:,}  perplexity {s.perplexity:.3f}  ({s.perplexity / base:.3f}x base)")
    if report.recovery:
        r = report.recovery
        print(f"recovery: {r['steps']} steps, wall time {r['wall_s']:.0f} s (the run, loading to save)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["sizes", "recover", "both", "refit"], default="both")
    parser.add_argument(
        "--damps", type=lambda v: [float(x) for x in v.split(",")], default=[0.1, 0.01, 0.001, 0.0001], help="refit"
    )
    parser.add_argument("--drop-layers", type=int, default=8, help="depth: layers dropped (8 of 30 = ~21%% params)")
    parser.add_argument("--keep", type=float, default=0.66, help="width: MLP channels kept (1536 -> 1024: ~20%%)")
    parser.add_argument(
        "--mix", action="append", default=[], help="sizes: also DROP,KEEP (layers dropped, then MLP channels kept)"
    )
    parser.add_argument(
        "--corpus",
        choices=["samples", *TEXT_CORPORA],
        default="samples",
        help="samples: the model's own answers (perplexity = exp(H + KL)); python-docs / python-docstrings: real "
        "text, CPython's reference manual / the standard library's docstrings",
    )
    parser.add_argument("--corpus-rows", type=int, default=604, help="prompts answered by the model (10%% held out)")
    parser.add_argument("--answer-tokens", type=int, default=128, help="longest sampled answer, in tokens")
    parser.add_argument("--answers-per-prompt", type=int, default=1, help="sampled answers per prompt (more data)")
    parser.add_argument("--gen-batch", type=int, default=64, help="prompts answered at once")
    parser.add_argument("--calib-rows", type=int, default=100000, help="calibration rows that score (default all)")
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-llama", action="store_true", help="sizes: skip the llama.cpp decode column")
    parser.add_argument("--llama-threads", type=int, default=None, help="sizes: llama.cpp threads (default torch's)")
    parser.add_argument("--gguf-type", choices=["f32", "f16", "q8_0"], default="f16", help="sizes: llama.cpp's GGUF")
    parser.add_argument(
        "--llama-only", action="store_true", help="sizes: time llama.cpp only (skip the two torch loops)"
    )
    parser.add_argument("--method", choices=["depth", "width", "depth+width"], default="width", help="recover: prune")
    parser.add_argument("--recover", choices=["distill", "lora"], default="distill")
    parser.add_argument(
        "--recover-adapter", choices=["full", "freeze", "lora"], default="full", help="freeze: all but the embeddings"
    )
    parser.add_argument(
        "--refit", action=argparse.BooleanOptionalAction, default=True, help="least-squares down_proj after width"
    )
    parser.add_argument("--teacher-logits", choices=["online", "cache"], default="online", help="distill: teacher")
    parser.add_argument("--top-k", type=int, default=32, help="distill cache: teacher tokens kept per position")
    parser.add_argument("--recover-steps", type=int, default=100000, help="step cap (the time budget stops first)")
    parser.add_argument("--recover-minutes", type=float, default=28.0, help="time budget of the recovery run")
    parser.add_argument("--loss", choices=["forward_kl", "reverse_kl", "jsd"], default="forward_kl")
    parser.add_argument("--alpha", type=float, default=0.0, help="distill: weight of the SFT loss")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=0, help="recover: held-out perplexity every N steps")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--pick", action="append", default=[], help="recover: DROP,KEEP candidates; the lowest perplexity is recovered"
    )
    parser.add_argument("--hold-minutes", type=float, default=0, help="recover: cap the budget to end by then")
    parser.add_argument("--model", default=MODEL, help="a smoke run on tiny: --model tiny --results /tmp/x")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    model, tokenizer = load_model(ModelArgs(name=args.model, dtype="fp32"), device="cpu")
    model.eval()
    per = f"x{args.answers_per_prompt}" if args.answers_per_prompt > 1 else ""
    if args.corpus in TEXT_CORPORA:
        name = "prune_corpus_{}_python{}{}.jsonl".format(args.corpus, *sys.version_info[:2])
        corpus_path = text_corpus(args.results / name, TEXT_CORPORA[args.corpus])
    else:
        corpus_file = args.results / f"prune_corpus_{args.corpus_rows}x{args.answer_tokens}{per}.jsonl"
        corpus_path = corpus(
            model, tokenizer, corpus_file, args.corpus_rows, args.answer_tokens, args.gen_batch, args.answers_per_prompt
        )
    data = load_calibration(
        DataArgs(path=str(corpus_path), validation_split=0.1, max_length=args.max_length),
        tokenizer,
        max_rows=args.calib_rows,
    )
    print(f"corpus {corpus_path}: {len(data.calibration)} calibration rows, {len(data.held_out)} held-out", flush=True)
    results_file = args.results / "prune.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results["threads"] = torch.get_num_threads()
    results["corpus"] = {
        "file": corpus_path.name,
        "sha256": hashlib.sha256(corpus_path.read_bytes()).hexdigest(),
        "python": platform.python_version(),
        "calibration": len(data.calibration),
        "held_out": len(data.held_out),
    }
    if args.part in ("sizes", "both"):
        key = "sizes_llama_only" if args.llama_only else "sizes"
        key += "" if args.gguf_type == "f16" else f"_{args.gguf_type}"
        key += f"_{args.llama_threads}thread" if args.llama_threads else ""
        results[key] = sizes(args, model, tokenizer, data)
        results_file.write_text(json.dumps(results, indent=2))
    if args.part == "refit":
        results["refit"] = {"calib_rows": len(data.calibration), "rows": refit_sweep(args, model, data)}
        results_file.write_text(json.dumps(results, indent=2))
    if args.part in ("recover", "both"):
        picked = pick(args, model, data) if args.pick else None
        args.base_layers = model.config.num_hidden_layers
        del model
        if args.hold_minutes:  # the lock this run holds: the recovery gets what is left of it (at most its budget)
            left = args.hold_minutes - (time.perf_counter() - START) / 60 - 4  # scoring, 3 perplexities, save
            args.recover_minutes = round(max(1.0, min(args.recover_minutes, left)), 1)
        row = {**recover(args, corpus_path), "picked_from": picked, "corpus": results["corpus"]}
        results.setdefault("recover", []).append(row)
        results_file.write_text(json.dumps(results, indent=2))
    print(f"results: {results_file}")


if __name__ == "__main__":
    main()
