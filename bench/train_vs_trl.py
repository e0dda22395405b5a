"""tunelab against TRL on the same model, data, LoRA, batch, learning rate and steps (issue 13).

Each column trains in its own subprocess (so each has its own peak resident memory, read with
``os.wait4``'s rusage of that child) on the bundled SmolLM2-135M-Instruct (TRL gets tunelab's
converted safetensors folder: local files only) and the deterministic instruction data of
``bench/instruct_data.py``. Both sides use LoRA r=16, alpha 32, dropout 0.05 on all linear
layers, AdamW, a constant learning rate, gradient clipping at 1.0, the same micro-batch,
accumulation and optimizer steps.

Columns:

* ``tunelab``: its defaults without packing (one example per row, right-padded);
* ``tunelab+packing`` (SFT): its default packing (position_ids restart per example, no
  cross-example attention); for DPO, padding-free pairs and precomputed reference log-probs;
* more tunelab columns add levers by name, joined with ``+``: ``grouped``
  (``training.group_by_length``: batches of similar length), ``gc`` (gradient checkpointing),
  ``ckpt<fraction>`` (``training.checkpoint_fraction``: that share of the layers checkpointed),
  ``fat`` (``training.lean_activations=false``), ``heap`` (``training.map_large_blocks=false``),
  ``mapped`` (``training.map_large_blocks=true``),
  e.g. ``tunelab+grouped``, ``tunelab+packing+ckpt0.3``;
* ``trl-defaults``: ``SFTTrainer`` / ``DPOTrainer`` defaults, changed only where this CPU
  requires it: fp32 (TRL defaults to bf16 autocast, which on an AVX2 CPU without AVX-512 BF16
  runs training matmuls ~4x slower than fp32: the precision probe measured fp32 12.7, bf16
  3.0 GFLOP/s on one thread) and ``use_cpu``;
* ``trl-best``: SFT packing (BFD, padding-free), gradient checkpointing off, fp32; DPO
  ``precompute_ref_log_probs`` and gradient checkpointing off.

Throughput counts optimizer steps 2..N (step 1 warms up kernels and allocators in both):
non-padding trained-on tokens/s for SFT, preference pairs/s for DPO. Loss: the mean training
loss over the steps (one epoch of the same examples when not packing, so the order does not
matter) and the last step's.

Run: ``python bench/train_vs_trl.py [--method sft|dpo|both] [--steps 8] [--micro-batch 8]
[--max-length 512] [--columns tunelab,trl-defaults,...]``; add ``--threads N`` to pin torch's
threads. Results also go to ``--out`` as JSON (one file per column). A column stopped by
``--column-timeout`` reports the optimizer steps it finished (both sides write each step as it
ends), marked "k/N steps" in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

COLUMNS = ("tunelab", "tunelab+packing", "trl-defaults", "trl-best")
#: tunelab column levers (``tunelab+<lever>+...``) -> config overrides
LEVERS = {
    "packing": [],  # data.packing, set below (DPO: also the precomputed reference)
    "grouped": ["training.group_by_length=true"],
    "gc": ["training.gradient_checkpointing=true"],
    "fat": ["training.lean_activations=false"],  # peft's LoRA dropout and the plain MLP (tunelab/train/activations.py)
    "heap": ["training.map_large_blocks=false"],  # glibc's own mmap threshold
    "mapped": ["training.map_large_blocks=true"],  # blocks >= 1 MiB mapped (huge pages: tunelab/utils/allocator.py)
    "glibc": [],  # TUNELAB_MALLOC=system: glibc's malloc instead of tcmalloc (tunelab/utils/allocator.py)
}
#: ``ckpt<fraction>`` (e.g. ``tunelab+packing+ckpt0.3``): ``training.checkpoint_fraction``
CKPT_LEVER = "ckpt"


def lever_overrides(lever: str) -> list[str] | None:
    """Config overrides of one column lever; None when unknown."""
    if lever.startswith(CKPT_LEVER):
        try:
            return [f"training.checkpoint_fraction={float(lever[len(CKPT_LEVER) :])}"]
        except ValueError:
            return None
    return LEVERS.get(lever)


LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
LR, MAX_GRAD_NORM, SEED = 2e-4, 1.0, 42


# ----------------------------------------------------------------------------- children


def tunelab_child(a: argparse.Namespace, column: str, data: Path, out: Path) -> dict:
    from tunelab.config import load_config
    from tunelab.train.loop import train

    levers = column.split("+")[1:]
    unknown = sorted(lever for lever in levers if lever_overrides(lever) is None)
    if unknown:
        known = ", ".join([*LEVERS, f"{CKPT_LEVER}<fraction>"])
        raise SystemExit(f"unknown tunelab lever(s) {unknown} in column {column!r}; known: {known}")
    packing = "packing" in levers  # SFT: packed rows; DPO: padding-free pairs (+ precomputed reference)
    overrides = [
        f"method={a.method}",
        "model.name=smollm2-135m-instruct",
        "adapter.type=lora",
        f"adapter.r={LORA['r']}",
        f"adapter.alpha={LORA['alpha']}",
        f"adapter.dropout={LORA['dropout']}",
        f"data.path={data}",
        f"data.max_length={a.max_length}",
        f"data.packing={str(packing).lower()}",
        "data.validation_split=0",
        f"training.max_steps={a.steps}",
        f"training.micro_batch_size={a.micro_batch}",
        f"training.gradient_accumulation={a.accumulation}",
        f"training.learning_rate={LR}",
        "training.lr_scheduler=constant",
        f"training.max_grad_norm={MAX_GRAD_NORM}",
        f"training.precision={a.precision}",
        "training.eval_every=0",
        "training.save_every=0",
        f"training.seed={SEED}",
        f"output_dir={out / 'runs'}",
        f"name={a.method}-{column}",
        *[o for lever in levers for o in lever_overrides(lever)],
    ]
    if a.method == "dpo":
        overrides += ["method_args.beta=0.1", f"method_args.precompute_reference={packing}".lower()]
    result = train(load_config(None, overrides))
    return tunelab_steps(Path(result.run_dir), a)


def _cpu_clock(out: Path) -> None:
    """Record the process CPU time (all threads) at the start of tunelab's steps and after each step
    into ``out``: a machine shared with other jobs stretches wall time, CPU time much less."""
    import tunelab.train.loop as loop

    marks: list[float] = []
    run_steps, after_step = loop._run_steps, loop._after_step

    def timed_run(ctx):
        marks.append(time.process_time())
        return run_steps(ctx)

    def timed_after(ctx, record):
        marks.append(time.process_time())
        out.write_text(json.dumps([b - a for a, b in zip(marks, marks[1:], strict=False)]))
        after_step(ctx, record)

    loop._run_steps, loop._after_step = timed_run, timed_after


def tunelab_steps(run_dir: Path, a: argparse.Namespace) -> dict:
    """The per-step record of a tunelab run from its metrics.jsonl (also of a run stopped midway)."""
    path, cpu = run_dir / "metrics.jsonl", run_dir.parent / f"{run_dir.name}.cpu.json"
    lines = path.read_text().splitlines() if path.is_file() else []
    steps = [r for r in map(json.loads, lines) if "mfu" in r]
    cpu_s = json.loads(cpu.read_text()) if cpu.is_file() else []
    seconds = [r["tokens"] / r["tokens_per_s"] for r in steps]
    return {
        "losses": [r["loss"] for r in steps],
        "step_s": seconds,
        "tokens": [r["tokens"] for r in steps],
        "pairs": [a.micro_batch * a.accumulation] * len(steps),
        "trained": [r.get("trained_tokens", 0) for r in steps],  # exact with accumulation 1
        "mfu": [r["mfu"] for r in steps],
        "cpu_s": cpu_s[: len(steps)],
    }


class _Timer:
    """A TrainerCallback recording each optimizer step's wall time (``on_step_begin`` -> ``on_step_end``
    leaves out the batch fetch, so the clock runs end to end instead)."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                timer.last, timer.last_cpu = time.perf_counter(), time.process_time()

            def on_step_end(self, args, state, control, **kwargs):
                now, cpu = time.perf_counter(), time.process_time()
                timer.step_s.append(now - timer.last)
                timer.cpu_s.append(cpu - timer.last_cpu)
                timer.last, timer.last_cpu = now, cpu

            def on_log(self, args, state, control, logs=None, **kwargs):
                if timer.on_step:  # after the step's loss is logged: the steps so far, for --column-timeout
                    timer.on_step()

        self.step_s: list[float] = []
        self.cpu_s: list[float] = []  # process CPU time (all threads) of each step
        self.last = self.last_cpu = 0.0
        self.on_step = None
        self.callback = Callback()


def _counting(collator, counts: list[tuple[int, int, int]], pairs: bool):
    """Wrap a collator: record (non-padding tokens, examples, trained tokens) of every batch it builds."""

    def collate(examples):
        batch = collator(examples)
        if pairs:
            counts.append((0, len(examples), 0))
            return batch
        trained = int((batch["labels"][:, 1:] != -100).sum())
        if "attention_mask" in batch:
            counts.append((int(batch["attention_mask"].sum()), len(examples), trained))
        else:  # padding-free: one flattened row, no padding at all
            counts.append((int(batch["input_ids"].numel()), len(examples), trained))
        return batch

    return collate


def trl_child(a: argparse.Namespace, column: str, data: Path, out: Path) -> dict:
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.models.resolve import resolve_model

    path = str(resolve_model("smollm2-135m-instruct").path)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    if a.method == "sft":  # conversational prompt-completion: loss on the completion only, as tunelab
        rows = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
    else:
        rows = [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in rows
        ]
    dataset = datasets.Dataset.from_list(rows)
    best = column == "trl-best"
    common = {
        "output_dir": str(out / "trl" / f"{a.method}-{column}"),
        "per_device_train_batch_size": a.micro_batch,
        "gradient_accumulation_steps": a.accumulation,
        "max_steps": a.steps,
        "learning_rate": LR,
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "max_grad_norm": MAX_GRAD_NORM,
        "max_length": a.max_length,
        "bf16": False,  # required here: bf16 matmuls ran ~4x slower than fp32 on this AVX2 CPU (precision probe)
        "fp16": False,
        "use_cpu": True,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": SEED,
        "dataloader_num_workers": 0,
    }
    if best:
        common["gradient_checkpointing"] = False
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules="all-linear")
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(path)
    timer = _Timer()
    counts: list[tuple[int, int, int]] = []
    if a.method == "sft":
        from trl import SFTConfig, SFTTrainer

        extra = {"packing": True} if best else {}
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**common, **extra),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[timer.callback],
        )
    else:
        from trl import DPOConfig, DPOTrainer

        extra = {"precompute_ref_log_probs": True} if best else {}
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**common, beta=0.1, **extra),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[timer.callback],
        )
    trainer.data_collator = _counting(trainer.data_collator, counts, pairs=a.method == "dpo")

    def record() -> dict:
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        n = min(len(losses), len(timer.step_s))
        per_step = [counts[i * a.accumulation : (i + 1) * a.accumulation] for i in range(n)]
        return {
            "losses": losses[:n],
            "step_s": timer.step_s[:n],
            "cpu_s": timer.cpu_s[:n],
            "tokens": [sum(c[0] for c in s) for s in per_step],
            "pairs": [sum(c[1] for c in s) for s in per_step],
            "trained": [sum(c[2] for c in s) for s in per_step],
        }

    partial = out / f"{a.method}-{column}.partial.json"
    timer.on_step = lambda: partial.write_text(json.dumps(record()))
    trainer.train()
    return record()


def child(a: argparse.Namespace) -> None:
    if a.child.startswith("tunelab"):  # as tunelab's CLI does before torch loads
        from tunelab.utils.allocator import prefer_huge_pages, preload_allocator

        preload_allocator()  # re-executes this child with tcmalloc where installed
        prefer_huge_pages()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    out = Path(a.out)
    data = out / "data" / ("sft.jsonl" if a.method == "sft" else "dpo.jsonl")
    run = tunelab_child if a.child.startswith("tunelab") else trl_child
    if run is tunelab_child:
        (out / "runs").mkdir(parents=True, exist_ok=True)
        _cpu_clock(out / "runs" / f"{a.method}-{a.child}.cpu.json")
    result = run(a, a.child, data, out)
    from tunelab.utils.allocator import loaded_allocator

    result["allocator"] = loaded_allocator()
    (out / f"{a.method}-{a.child}.json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------- parent


def run_column(a: argparse.Namespace, method: str, column: str) -> dict:
    """One column in a fresh process; its peak RSS from the kernel's rusage of that child."""
    args = [sys.executable, __file__, "--child", column, "--method", method]
    args += ["--steps", str(a.steps), "--micro-batch", str(a.micro_batch), "--accumulation", str(a.accumulation)]
    args += ["--max-length", str(a.max_length), "--precision", a.precision, "--out", a.out, "--threads", str(a.threads)]
    env = {**os.environ, "NO_COLOR": "1", "TOKENIZERS_PARALLELISM": "false"}
    if "glibc" in column.split("+")[1:]:
        env["TUNELAB_MALLOC"] = "system"
    start = time.time()
    (Path(a.out) / f"{method}-{column}.partial.json").unlink(missing_ok=True)
    shutil.rmtree(Path(a.out) / "runs" / f"{method}-{column}", ignore_errors=True)  # an earlier run's folder
    (Path(a.out) / "runs" / f"{method}-{column}.cpu.json").unlink(missing_ok=True)
    proc = subprocess.Popen(args, env=env)
    while True:  # poll, so that a column past --column-timeout can be stopped
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if a.column_timeout and time.time() - start > a.column_timeout:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            stopped = {"timed_out": time.time() - start, "peak_rss_gib": usage.ru_maxrss / 2**20, "steps": a.steps}
            stopped.update(partial_steps(a, method, column))
            (Path(a.out) / f"{method}-{column}.result.json").write_text(json.dumps(stopped))
            return stopped
        time.sleep(1.0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{method} {column} failed (exit {proc.returncode})")
    result = json.loads((Path(a.out) / f"{method}-{column}.json").read_text())
    result.update(peak_rss_gib=usage.ru_maxrss / 2**20, wall_s=time.time() - start)  # ru_maxrss is in KiB
    (Path(a.out) / f"{method}-{column}.result.json").write_text(json.dumps(result))
    return result


def partial_steps(a: argparse.Namespace, method: str, column: str) -> dict:
    """The steps a column stopped by --column-timeout had finished (empty when none)."""
    if column.startswith("tunelab"):
        steps = tunelab_steps(Path(a.out) / "runs" / f"{method}-{column}", a)
        return steps if steps["losses"] else {}
    path = Path(a.out) / f"{method}-{column}.partial.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def summary(method: str, r: dict) -> dict:
    """Throughput over steps 2..N, mean and last loss; a column stopped by --column-timeout: over
    the steps it finished (none when it finished fewer than two)."""
    if "timed_out" in r and len(r.get("step_s", [])) < 2:
        return {"timed_out": r["timed_out"], "peak": r["peak_rss_gib"]}
    timed = slice(1, None) if len(r["step_s"]) > 1 else slice(None)
    seconds = sum(r["step_s"][timed])
    amount = sum(r["tokens" if method == "sft" else "pairs"][timed])
    cpu = sum(r.get("cpu_s", [])[timed])
    # SFT: each step's loss is a mean over its trained tokens, so the run's mean NLL per trained
    # token weights the steps by them; DPO steps all hold the same number of pairs.
    weights = r["trained"] if method == "sft" and all(r["trained"]) else [1] * len(r["losses"])
    return {
        "speed": amount / seconds,
        "cpu_speed": amount / cpu if cpu else None,
        "peak": r["peak_rss_gib"],
        "mean_loss": sum(x * w for x, w in zip(r["losses"], weights, strict=True)) / sum(weights),
        "last_loss": r["losses"][-1],
        "tokens": sum(r["tokens"]),
        "wall": r.get("wall_s", r.get("timed_out")),
        "done": None if "timed_out" not in r else f"{len(r['step_s'])}/{r['steps']}",
        "mfu": statistics.mean(m) if (m := [x for x in r.get("mfu", [])[timed] if x is not None]) else None,
        "allocator": r.get("allocator"),
    }


def table(method: str, results: dict[str, dict]) -> str:
    unit = "non-padding tokens/s" if method == "sft" else "pairs/s"
    cols = list(results)
    s = {c: summary(method, results[c]) for c in cols}
    lines = [f"| {method.upper()} | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]

    def row(name: str, key: str, fmt) -> None:
        cells = [fmt(s[c][key]) if s[c].get(key) is not None else "-" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    def speed(x: dict) -> str:
        if "speed" not in x:
            return f"not done in {x['timed_out']:.0f} s"
        done = f" ({x['done']} steps in {x['wall']:.0f} s)" if x["done"] else ""
        return f"{x['speed']:.{3 if method == 'dpo' else 1}f}{done}"

    lines.append(f"| {unit} | " + " | ".join(speed(x) for x in s.values()) + " |")
    row(f"{unit.split('/')[0]} per CPU-second", "cpu_speed", lambda v: f"{v:.{3 if method == 'dpo' else 1}f}")
    row("peak RSS (GiB)", "peak", lambda v: f"{v:.2f}")
    row("mean train loss" + (" (per trained token)" if method == "sft" else ""), "mean_loss", lambda v: f"{v:.4f}")
    row("last step loss", "last_loss", lambda v: f"{v:.4f}")
    row("non-padding tokens (all steps)", "tokens", lambda v: f"{v}" if v else "-")
    row("MFU (tunelab, steps 2..N)", "mfu", lambda v: f"{100 * v:.1f}%")
    row("process wall s", "wall", lambda v: f"{v:.0f}")
    row("malloc", "allocator", str)
    for ours in [c for c in cols if c.startswith("tunelab")]:
        for theirs in [c for c in cols if c.startswith("trl")]:
            if ours in s and theirs in s and "speed" in s[ours] and "speed" in s[theirs]:
                cpu = [s[c].get("cpu_speed") for c in (ours, theirs)]
                lines.append(
                    f"\n{ours} / {theirs}: speed {s[ours]['speed'] / s[theirs]['speed']:.2f}x"
                    + (f" (per CPU-second {cpu[0] / cpu[1]:.2f}x)" if all(cpu) else "")
                    + f", peak RSS {s[ours]['peak'] / s[theirs]['peak']:.2f}x"
                )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", default="both", choices=["sft", "dpo", "both"])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--accumulation", type=int, default=1)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--precision", default="fp32", help="tunelab's training.precision (auto = its probe's choice)")
    p.add_argument("--columns", default=",".join(COLUMNS))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--reuse", default="", help="columns to read from an earlier run's --out instead of running")
    p.add_argument("--column-timeout", type=float, default=0, help="stop a column after this many seconds (0: never)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_vs_trl"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
        return
    from instruct_data import write

    # Non-packed columns see every example exactly once: steps x micro-batch x accumulation rows.
    write(Path(a.out) / "data", a.steps * a.micro_batch * a.accumulation)  # deterministic: --reuse sees the same
    methods = ["sft", "dpo"] if a.method == "both" else [a.method]
    import torch

    threads = a.threads or torch.get_num_threads()
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch threads {threads}", flush=True)
    for method in methods:
        results = {}
        for column in a.columns.split(","):
            saved = Path(a.out) / f"{method}-{column}.result.json"
            reuse = column in a.reuse.split(",") and saved.is_file()  # a column measured by an earlier run
            results[column] = json.loads(saved.read_text()) if reuse else run_column(a, method, column)
            print(f"{method} {column}: {json.dumps(summary(method, results[column]))}", flush=True)
        text = table(method, results)
        (Path(a.out) / f"{method}-table.md").write_text(text + "\n")
        print(text, flush=True)


if __name__ == "__main__":
    main()
