"""Cost of drawing one LoRA dropout keep-mask: torch's ``bernoulli_`` against tunelab's
``keep_mask`` (16-bit lanes of 64-bit random words, tunelab/train/lora_dropout.py).

Each training step of the bundled model at micro-batch 8 x 512 draws 210 masks (7 LoRA targets x
30 layers; six of 4096 x 576 elements and one of 4096 x 1536 per layer), and with the mask
redrawn in backward instead of kept, twice. The two are timed interleaved in one process,
``--repeats`` times each, and the keep rates printed.

Run: ``python bench/dropout_mask.py [--rows 4096] [--cols 576] [--p 0.05] [--repeats 30]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tunelab.train.lora_dropout import draw_seed, keep_mask


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=576)
    p.add_argument("--p", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=30)
    a = p.parse_args()
    shape, keep = (a.rows, a.cols), 1.0 - a.p
    ways = {
        "bernoulli_ (bool)": lambda: torch.empty(shape, dtype=torch.bool).bernoulli_(keep),
        "keep_mask": lambda: keep_mask(torch.Size(shape), keep, draw_seed()),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    rates: dict[str, float] = {}
    for name, draw in ways.items():  # warm-up
        rates[name] = float(draw().float().mean())
    for _ in range(a.repeats):
        for name, draw in ways.items():
            start = time.perf_counter()
            draw()
            times[name].append(time.perf_counter() - start)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, mask {a.rows} x {a.cols}, keep {keep}")
    base = statistics.median(times["bernoulli_ (bool)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:18s} median {med * 1e3:7.2f} ms   {base / med:5.2f}x bernoulli_   keep rate {rates[name]:.5f}")


if __name__ == "__main__":
    main()
