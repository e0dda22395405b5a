"""Where one SFT training step of the bundled SmolLM2-135M + LoRA r16 spends its time (torch.profiler).

Builds the same micro-batch tunelab's loop would (``bench/instruct_data.py`` rows, chat
template), packed or not, runs one warm-up step and one profiled forward + backward + AdamW
step, and prints the top operators by self CPU time.

Run: ``python bench/profile_step.py [--packing] [--micro-batch 8] [--max-length 512] [--rows 20]``
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
    from instruct_data import write

    from tunelab.config import load_config
    from tunelab.methods.sft import SFT
    from tunelab.models.load import load_model

    p = argparse.ArgumentParser()
    p.add_argument("--packing", action="store_true")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--rows", type=int, default=25)
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
        ],
    )
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


if __name__ == "__main__":
    main()
