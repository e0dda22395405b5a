"""Does ``torch.compile`` pay for a training step on this CPU? Eager vs compiled decoder layers.

The bundled SmolLM2-135M-Instruct with LoRA r16 on all linear layers, tunelab's SFT loss
(``tunelab/methods/sft.py``: chunked head on trained tokens only) on packed rows of
``bench/instruct_data.py`` (packed rows all have width ``--max-length``, so the shapes are static
and one compilation serves every step). "Compiled" compiles each decoder layer in place
(``nn.Module.compile``, regional compilation: one graph reused by all layers), leaving the
tunelab head loss eager. Both run forward + backward on the same batches from the same weights
(no optimizer step), alternately, so the machine's noise hits both alike; the losses must
agree within 1e-4. Prints the one-off compile time (first compiled step minus an eager step),
the median eager and compiled step, and the steps needed to earn the compile time back.

Run: ``python bench/compile_step.py [--micro-batch 2] [--max-length 512] [--steps 4]``.
"""

from __future__ import annotations

import argparse
import statistics
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
    from tunelab.data.types import IGNORE_INDEX, Row
    from tunelab.methods.sft import SFT
    from tunelab.models.load import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--steps", type=int, default=4)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    sft_file, _ = write(tmp, 64)
    overrides = ["model.name=smollm2-135m-instruct", "adapter.r=16", "adapter.alpha=32", "adapter.dropout=0"]
    overrides += [f"data.path={sft_file}", f"data.max_length={a.max_length}", "data.validation_split=0"]
    cfg = load_config(None, overrides)
    model, tok = load_model(cfg.model, cfg.adapter, for_training=True)
    model.train()
    method = SFT(cfg, model, tok, tmp)
    rows = method.build_datasets().train
    mb, width = a.micro_batch, a.max_length

    def full(row: Row) -> Row:  # pad to max_length (a separate segment, not trained): one static shape
        n = width - len(row.input_ids)
        return Row(row.input_ids + [0] * n, row.labels + [IGNORE_INDEX] * n, row.position_ids + list(range(n)))

    batches = [method.collate([full(r) for r in rows[i * mb : (i + 1) * mb]]) for i in range(a.steps + 1)]

    def step(batch) -> tuple[float, float]:
        start = time.perf_counter()
        loss, _ = method.loss(model, batch)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start, float(loss)

    layers = model.get_base_model().model.layers
    step(batches[0])  # warm-up, eager
    eager_first, _ = step(batches[0])
    for layer in layers:
        layer.compile()
    compile_s, _ = step(batches[0])
    eager, compiled = [], []
    for batch in batches[1:]:
        for layer in layers:  # nn.Module.compile sets _compiled_call_impl; clearing it runs eager
            layer._compiled_call_impl = None
        t_eager, loss_eager = step(batch)
        for layer in layers:
            layer.compile()
        t_comp, loss_comp = step(batch)
        assert abs(loss_eager - loss_comp) < 1e-4, (loss_eager, loss_comp)
        eager.append(t_eager)
        compiled.append(t_comp)
    e, c = statistics.median(eager), statistics.median(compiled)
    tokens = mb * a.max_length
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {tokens} tokens per step, {len(eager)} steps")
    print(f"first compiled step {compile_s:.1f} s (an eager step {eager_first:.1f} s)")
    print(f"eager {e:.2f} s/step ({tokens / e:.0f} tok/s), ", end="")
    print(f"compiled {c:.2f} s/step ({tokens / c:.0f} tok/s): {e / c:.2f}x")
    gain = e - c
    if gain > 0:
        print(f"compile time earned back after {(compile_s - c) / gain:.0f} steps")
    else:
        print("compiled steps are not faster: compile does not pay here")


if __name__ == "__main__":
    main()
