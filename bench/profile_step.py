"""Where one SFT training step of the bundled SmolLM2-135M + LoRA r16 spends its time (torch.profiler).

Builds the same micro-batch tunelab's loop would (``bench/instruct_data.py`` rows, chat
template), packed or not, runs one warm-up step and one profiled forward + backward + AdamW
step, and prints the top operators by self CPU time.

With ``--memory`` it instead measures where the resident memory goes: the peak RSS (``VmHWM``,
reset through ``/proc/self/clear_refs`` before each phase) of load, data, forward, backward and
optimizer step, and what autograd saves for backward by (shape, dtype) with
``saved_tensors_hooks``, each storage once. The loop's activation levers
(tunelab/train/activations.py) apply as in training (``training.*`` overrides on the command line,
e.g. ``training.lean_activations=false``).

Run: ``python bench/profile_step.py [--packing] [--micro-batch 8] [--max-length 512] [--rows 20]
[--steps 2] [--memory [training.key=value ...]]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    from tunelab.utils.allocator import prefer_huge_pages, preload_allocator

    preload_allocator()  # as tunelab's CLI: tcmalloc where installed (TUNELAB_MALLOC=system: glibc)
    prefer_huge_pages()
    from instruct_data import write

    from tunelab.config import load_config
    from tunelab.methods.sft import SFT
    from tunelab.models.load import load_model

    p = argparse.ArgumentParser()
    p.add_argument("--packing", action="store_true")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--steps", type=int, default=2, help="training steps with --memory")
    p.add_argument("--memory", nargs="*", default=None, help="peak RSS per phase and saved tensors (+ overrides)")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    sft_file, _ = write(tmp, 64)
    cfg = load_config(
        None,
        [
            "model.name=smollm2-135m-instruct",
            "adapter.r=16",
            "adapter.alpha=32",
            f"data.path={sft_file}",
            f"data.max_length={a.max_length}",
            f"data.packing={str(a.packing).lower()}",
            "data.validation_split=0",
            *(a.memory or []),
        ],
    )
    if a.memory is not None:
        memory_phases(cfg, tmp, a.micro_batch, a.steps)
        return
    model, tok = load_model(cfg.model, cfg.adapter, for_training=True)
    method = SFT(cfg, model, tok, tmp)
    rows = method.build_datasets().train
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)

    def step(items) -> int:
        batch = method.collate(items)
        loss, _ = method.loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return sum(batch["_lengths"])

    step(rows[: a.micro_batch])
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        tokens = step(rows[a.micro_batch : 2 * a.micro_batch])
    seconds = time.perf_counter() - start
    print(f"packing={a.packing}: {tokens} tokens in {seconds:.1f} s (profiled), {tokens / seconds:.1f} tok/s")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))


def _phase(name: str) -> None:
    """Print the resident set and its peak since the last phase, then reset the peak."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    rss, hwm = (int(fields[k].split()[0]) / 2**20 for k in ("VmRSS", "VmHWM"))
    print(f"{name:24s} RSS {rss:6.2f} GiB   peak in phase {hwm:6.2f} GiB", flush=True)
    Path("/proc/self/clear_refs").write_text("5")


def memory_phases(cfg, tmp: Path, micro_batch: int, steps: int = 2) -> None:
    """Peak RSS per phase of ``steps`` training steps and the saved-tensor inventory of the last."""
    import collections

    from torch.autograd.graph import saved_tensors_hooks

    from tunelab.methods.sft import SFT
    from tunelab.models.load import load_model
    from tunelab.train import activations

    _phase("start")
    model, tok = load_model(
        cfg.model,
        cfg.adapter,
        for_training=True,
        gradient_checkpointing=activations.checkpoint_fraction(cfg.training, cfg.adapter.type) > 0,
    )
    print(activations.record(activations.apply(model, cfg.training, cfg.adapter.type)))
    _phase("load")
    method = SFT(cfg, model, tok, tmp)
    rows = method.build_datasets().train
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    _phase("data")
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    for step in range(steps):
        batch = method.collate(rows[step * micro_batch : (step + 1) * micro_batch])
        seen: dict[int, tuple[int, tuple, str]] = {}

        def pack(t, seen=seen):
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = (storage.nbytes(), tuple(t.shape), str(t.dtype))
            return t

        _phase(f"step {step} collate {tuple(batch['input_ids'].shape)}")
        start = time.perf_counter()
        with saved_tensors_hooks(pack, lambda t: t):
            loss, _ = method.loss(model, batch)
        _phase(f"step {step} forward {time.perf_counter() - start:.0f}s")
        start = time.perf_counter()
        loss.backward()
        del loss
        _phase(f"step {step} backward {time.perf_counter() - start:.0f}s")
        opt.step()
        opt.zero_grad(set_to_none=True)
        _phase(f"step {step} optimizer")
    kinds: dict[tuple, list[int]] = collections.defaultdict(lambda: [0, 0])
    for nbytes, shape, dtype in seen.values():
        kinds[(shape, dtype)][0] += nbytes
        kinds[(shape, dtype)][1] += 1
    total = sum(v[0] for v in kinds.values())
    print(f"saved for backward (last step, outside checkpointed layers): {total / 2**30:.3f} GiB, {len(seen)} storages")
    for (shape, dtype), (nbytes, count) in sorted(kinds.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"  {nbytes / 2**30:7.3f} GiB  x{count:4d}  {shape} {dtype}")


if __name__ == "__main__":
    main()
