"""Planner vs measurement on this CPU: real training steps of the bundled SmolLM2-135M.

For each (method, micro-batch, sequence length) it measures, on one training step under the
loop's CPU setting (fp32 master weights, bf16 autocast, AdamW):

* **activations**: bytes autograd keeps for backward, by storage, with ``saved_tensors_hooks``
  (tests/memory/measure.py) — this isolates activations from weights, gradients and the
  allocator; the planner's activation term is compared with it;
* **step peak**: the rise of peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) over
  the RSS before the step, once optimizer state exists; compared with the planner's transient
  terms (activations + autocast copies + logits/loss + gradients − overlap). glibc is told to
  return large blocks to the OS (``MALLOC_MMAP_THRESHOLD_``) so RSS follows the tensors.

With gradient checkpointing (``method:batch:seq:ckpt``) "act" counts only what stays saved
(block inputs); the step peak is the comparison that matters there.

Run: ``python bench/memory_train.py [method:batch:seq[:ckpt] ...]`` (minutes per case on 2 busy cores).
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:  # must be set before the process starts
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    os.execv(sys.executable, [sys.executable, *sys.argv])

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "memory"))

import torch  # noqa: E402 - after the re-exec above
from measure import saved_bytes, train_step  # noqa: E402

from tunelab.memory import AdapterShape, TrainSpec, architecture_from_config, plan_training  # noqa: E402
from tunelab.models.resolve import resolve_model  # noqa: E402

CASES = [("lora", 1, 256, False), ("lora", 2, 256, False), ("lora", 2, 512, False), ("full", 1, 256, False),
         ("full", 2, 256, False), ("prompt_tuning", 2, 256, False), ("freeze", 2, 512, False),
         ("lora", 2, 512, True), ("full", 2, 512, True)]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _model(path, adapter: str, checkpointing: bool = False):
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    if adapter == "lora":
        model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", lora_dropout=0.05,
                                                 task_type="CAUSAL_LM"))
    elif adapter == "prompt_tuning":
        model = get_peft_model(model, PromptTuningConfig(num_virtual_tokens=16, task_type="CAUSAL_LM"))
    elif adapter == "freeze":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in [*model.model.layers[-2:].parameters(), *model.model.norm.parameters()]:
            p.requires_grad_(True)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def measure(path, arch, adapter: str, batch: int, seq: int, checkpointing: bool = False) -> dict:
    torch.manual_seed(0)
    model = _model(path, adapter, checkpointing)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, arch.vocab_size, (batch, seq))
    train_step(model, optimizer, ids, "cpu")  # optimizer state now exists
    saved = saved_bytes(model, {"input_ids": ids}, autocast=True, vocab=arch.vocab_size)
    gc.collect()
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    train_step(model, optimizer, ids, "cpu")
    peak = _status("VmHWM") - before
    plan = plan_training(TrainSpec(arch=arch, adapter=adapter, batch_size=batch, seq_len=seq, precision="mixed",
                                   device="cpu", masked=False, shape=AdapterShape(),
                                   gradient_checkpointing=checkpointing))
    transient = plan.activations + plan.weight_copies + plan.logits + plan.gradients + plan.overlap
    del model, optimizer
    gc.collect()
    return {"method": adapter + ("+ckpt" if checkpointing else ""), "batch": batch, "seq": seq,
            "act_pred": plan.activations, "act_meas": saved.activations,
            "peak_pred": transient, "peak_meas": peak}


def main() -> None:
    torch.set_num_threads(2)
    path = resolve_model("smollm2-135m-instruct").path
    arch = architecture_from_config(json.loads((path / "config.json").read_text()))
    mib = 2**20
    print(f"{'method':<14}{'B':>3}{'T':>5} | {'act pred':>9}{'act meas':>9}{'ratio':>7} | "
          f"{'step pred':>10}{'step meas':>10}{'ratio':>7}   (MiB)")
    cases = [(a, int(b), int(t), ck == ["ckpt"]) for a, b, t, *ck in (arg.split(":") for arg in sys.argv[1:])] or CASES
    for adapter, batch, seq, checkpointing in cases:
        r = measure(path, arch, adapter, batch, seq, checkpointing)
        print(f"{r['method']:<14}{batch:>3}{seq:>5} | {r['act_pred'] / mib:>9.1f}{r['act_meas'] / mib:>9.1f}"
              f"{r['act_pred'] / r['act_meas']:>7.3f} | {r['peak_pred'] / mib:>10.1f}{r['peak_meas'] / mib:>10.1f}"
              f"{r['peak_pred'] / r['peak_meas']:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
