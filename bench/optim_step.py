"""AdamW step time on the trainable parameters of issue 13's benchmark: fused vs foreach vs a loop.

The parameters are the LoRA adapters (r=16 on all linear layers, as ``bench/train_vs_trl.py``) of
the bundled SmolLM2-135M-Instruct, with random gradients. The three implementations of
``torch.optim.AdamW`` run interleaved in one process (the machine's noise hits all three alike),
``--repeats`` rounds of ``--steps`` steps each; the fastest round of each is kept, and their
updates are checked equal. tunelab's optimizer (``tunelab/train/optim.py``) is the fused one.

Run: ``python bench/optim_step.py [--repeats 5] [--steps 20]``.
"""

from __future__ import annotations

import argparse
import time

import torch


def lora_params() -> list[torch.nn.Parameter]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.models.resolve import resolve_model

    model = AutoModelForCausalLM.from_pretrained(str(resolve_model("smollm2-135m-instruct").path), dtype="float32")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    return [p for p in model.parameters() if p.requires_grad]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    base = lora_params()
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(x.shape, generator=g) * 1e-3 for x in base]
    kinds = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    params, optims = {}, {}
    for name, kw in kinds.items():
        params[name] = [torch.nn.Parameter(x.detach().clone()) for x in base]
        for q, grad in zip(params[name], grads, strict=True):
            q.grad = grad.clone()
        optims[name] = torch.optim.AdamW(params[name], lr=2e-4, **kw)
    best = dict.fromkeys(kinds, float("inf"))
    for _ in range(a.repeats):
        for name in kinds:
            start = time.perf_counter()
            for _ in range(a.steps):
                optims[name].step()
            best[name] = min(best[name], (time.perf_counter() - start) / a.steps)
    for name in ("foreach", "fused"):
        diff = max(float((x - y).abs().max()) for x, y in zip(params[name], params["loop"], strict=True))
        assert diff < 1e-6, f"{name} differs from the loop by {diff}"
    count = sum(x.numel() for x in base)
    print(f"{len(base)} LoRA tensors, {count / 1e6:.2f} M parameters, torch threads {torch.get_num_threads()}")
    for name in kinds:
        print(f"{name:8s} {1e3 * best[name]:7.2f} ms/step  ({best['loop'] / best[name]:.2f}x the loop)")


if __name__ == "__main__":
    main()
