"""Planner vs ``torch.cuda.max_memory_allocated`` on a GPU: real training steps, random weights.

A prepared check for when a GPU is lent (it needs no download: models are built from the
presets' ``config.json`` facts with random weights — memory does not depend on the values).
For each case it runs one warm-up step (optimizer state now exists), resets the peak counter,
runs one more step in tunelab's GPU setting (bf16 weights, peft LoRA in fp32 or the base in
NF4 through bitsandbytes, AdamW, SDPA) and compares the peak with the planner's total, without
its runtime-overhead term (the counter excludes the CUDA context).

Run: ``python bench/memory_gpu.py [model:adapter:batch:seq[:ckpt] ...]``; results go to
``bench/results/memory_gpu.json``. ``--device cpu`` only smoke-tests the code path on a tiny
preset (no peak is measured there; use bench/memory_train.py on CPUs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from tunelab.memory import AdapterShape, TrainSpec, plan_training
from tunelab.memory.sources import _presets, load_model_source

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "memory"))
from measure import train_step  # noqa: E402 - the step bench/memory_train.py measures on CPU

CASES = ["smollm2-360m:lora:4:1024", "smollm2-360m:full:2:1024", "llama-3.2-1b:lora:2:2048",
         "llama-3.2-1b:lora:2:2048:ckpt", "llama-3.2-1b:qlora:2:2048", "llama-3.2-1b:full:1:1024",
         "llama-3.2-3b:qlora:4:1024:ckpt"]


def build(model: str, adapter: str, device: str, checkpointing: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig

    cfg = dict(_presets()["models"][model]["config"])
    cfg.pop("model_type", None)
    config = LlamaConfig(**cfg)
    model_ = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa").to(device)
    if adapter == "qlora":  # quantize the random bf16 weights the way from_pretrained would
        import shutil

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        folder = ROOT / "bench" / "results" / f"_tmp-{model}"
        model_.save_pretrained(folder)
        del model_
        if device == "cuda":
            torch.cuda.empty_cache()
        model_ = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, device_map={"": device})
        shutil.rmtree(folder)
    if checkpointing:
        model_.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if adapter in ("lora", "qlora"):
        model_ = get_peft_model(model_, LoraConfig(r=8, target_modules="all-linear", lora_dropout=0.05,
                                                   task_type="CAUSAL_LM"))
    model_.config.use_cache = False
    model_.train()
    return model_


def run_case(case: str, device: str) -> dict:
    model_name, adapter, batch, seq, *rest = case.split(":")
    batch, seq, checkpointing = int(batch), int(seq), rest == ["ckpt"]
    arch = load_model_source(model_name).arch
    spec = TrainSpec(arch=arch, adapter=adapter, batch_size=batch, seq_len=seq, precision="bf16", device="cuda",
                     quantization="nf4" if adapter == "qlora" else "none", gradient_checkpointing=checkpointing,
                     shape=AdapterShape(r=8, dropout=0.05), overhead=0.0)
    plan = plan_training(spec)
    model = build(model_name, adapter, device, checkpointing)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, arch.vocab_size, (batch, seq), device=device)
    train_step(model, optimizer, ids)
    measured = None
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        train_step(model, optimizer, ids)
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated()
    del model, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"case": case, "planned": plan.total, "measured": measured,
            "breakdown": {k: v for k, v in plan.breakdown().items() if v}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help="model:adapter:batch:seq[:ckpt] (presets)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    cases = args.cases or (CASES if args.device == "cuda" else ["smollm2-135m:lora:1:64"])
    gib = 2**30
    results = []
    for case in cases:
        r = run_case(case, args.device)
        results.append(r)
        meas = r["measured"]
        ratio = f"{r['planned'] / meas:.3f}" if meas else "-"
        print(f"{case:<34} planned {r['planned'] / gib:7.2f} GiB  measured "
              f"{(meas or 0) / gib:7.2f} GiB  ratio {ratio}", flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory_gpu.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
