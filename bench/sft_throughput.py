"""SFT throughput on the bundled SmolLM2-135M: tunelab's loop vs a bare PyTorch + peft loop.

For LoRA and QLoRA, both loops train the same model on the same packed rows with AdamW and
the same autocast dtype; we report tokens/s and the ratio tunelab / bare (≈1.0 means the loop
adds no overhead). Run: python bench/sft_throughput.py [--steps 8] [--precision bf16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from tunelab.config import load_config
from tunelab.methods.sft import SFT
from tunelab.models.load import load_model
from tunelab.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


def config(adapter: str, steps: int, precision: str, out: Path):
    return load_config(
        ROOT / "examples" / "sft-lora.yaml",
        [
            f"adapter.type={adapter}",
            f"training.max_steps={steps}",
            "training.eval_every=0",
            "training.save_every=0",
            f"training.precision={precision}",
            "training.gradient_accumulation=1",
            "training.micro_batch_size=8",
            f"data.path={ROOT / 'examples/data/quickstart.jsonl'}",
            "data.max_length=256",
            f"output_dir={out}",
            f"name={adapter}-{int(time.time())}",
        ],
    )


def bare_loop(cfg, steps: int) -> float:
    """Plain loop: same model/adapter/data, no checkpoints, metrics or progress."""
    torch.manual_seed(0)
    model, tok = load_model(cfg.model, cfg.adapter, for_training=True)
    method = SFT(cfg, model, tok, Path("/tmp"))
    rows = method.build_datasets().train
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.training.learning_rate)
    dtype = torch.bfloat16 if cfg.training.precision == "bf16" else torch.float32
    tokens, start = 0, None
    for step in range(steps + 1):  # step 0 warms up
        if step == 1:
            start = time.time()
        batch = method.collate([rows[(step * 8 + i) % len(rows)] for i in range(8)])
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss, _ = method.loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= 1:
            tokens += batch["input_ids"].numel()
    return tokens / (time.time() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--out", default="bench/results/sft")
    args = parser.parse_args()
    table = Table(
        title=f"SFT tokens/s on SmolLM2-135M (micro-batch 8, {args.precision}, {torch.get_num_threads()} threads)"
    )
    for col in ("adapter", "tunelab loop", "bare loop", "ratio"):
        table.add_column(col)
    for adapter in ("lora", "qlora"):
        cfg = config(adapter, args.steps, args.precision, Path(args.out))
        ours = train(cfg).tokens_per_s
        bare = bare_loop(config(adapter, args.steps, args.precision, Path(args.out)), args.steps)
        table.add_row(adapter, f"{ours:,.0f}", f"{bare:,.0f}", f"{ours / bare:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
