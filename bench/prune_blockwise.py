"""An experiment, not a tunelab feature: block-wise reconstruction of width-pruned MLPs before recovery.

``tunelab prune --method width --refit`` refits each narrowed ``down_proj`` by least squares (a
closed form, seconds). This script asks how much further a *trained* local reconstruction gets,
layer by layer, before any end-to-end recovery: for layer ``l``, the narrowed MLP (gate, up and
down) is trained with Adam to reproduce the unpruned MLP's output on the unpruned model's own
inputs to it, over the calibration tokens (``--target local``), or to bring the pruned model's
residual stream after layer ``l`` back to the unpruned one's, from the pruned model's inputs
(``--target stream``, which also asks the MLP to undo the error the layers below left). Layer-wise
reconstruction of this kind is what GPTQ/SparseGPT-style one-shot compressors solve in closed form
(Frantar & Alistarh 2023, arXiv:2301.00774) and BRECQ trains per block (Li et al. 2021,
arXiv:2102.05426); it needs one layer's forward and backward per step, not the model's.

It prints the held-out perplexity of the base, of the width prune with the least-squares refit,
and after the block-wise training, and each layer's relative reconstruction error before and after.
Run: ``python bench/prune_blockwise.py --calib-rows 320 --epochs 4 --lr 1e-3 --target local``
(needs ``bench/results/prune_corpus_700x64x2.jsonl``, written by ``bench/prune.py --corpus-rows 700
--answers-per-prompt 2 --answer-tokens 64``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

from tunelab.compress.calib import load_calibration, perplexity
from tunelab.compress.width import channel_importance, channels_to_keep, down_grams, prune_channels
from tunelab.config import DataArgs, ModelArgs
from tunelab.models.load import load_model
from tunelab.train.optim import SCHEDULES

RESULTS = Path(__file__).resolve().parent / "results"


def after_attention(layer, hidden, position_embeddings):
    """The residual stream of a Llama-style decoder layer after its attention block (causal, no padding
    mask: rows are right-padded, so a real token never attends to padding)."""
    attended, _ = layer.self_attn(
        hidden_states=layer.input_layernorm(hidden), position_embeddings=position_embeddings, attention_mask=None
    )
    return hidden + attended


def train_mlp(mlp, inputs, targets, epochs: int, lr: float, micro_batch: int, bf16: bool) -> tuple[float, float]:
    """Adam with a cosine LR on ``‖mlp(x) − t‖²`` over the token rows; the relative error before and after."""

    def relative_error() -> float:
        with torch.no_grad():
            return float((mlp(inputs) - targets).pow(2).mean() / targets.pow(2).mean())

    before = relative_error()
    optimizer = torch.optim.Adam(mlp.parameters(), lr=lr)
    n = inputs.shape[0]
    total, step = epochs * math.ceil(n / micro_batch), 0
    for _ in range(epochs):
        order = torch.randperm(n)
        for start in range(0, n, micro_batch):
            rows = order[start : start + micro_batch]
            for group in optimizer.param_groups:
                group["lr"] = lr * SCHEDULES["cosine"](step / total, 0.0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = (mlp(inputs[rows]) - targets[rows]).float().pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    return before, relative_error()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=RESULTS / "prune_corpus_700x64x2.jsonl")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--keep", type=int, default=992, help="MLP channels kept (1536 -> 992: 0.790 of the params)")
    parser.add_argument("--calib-rows", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--micro-batch", type=int, default=512, help="tokens per Adam step")
    parser.add_argument("--fp32", action="store_true", help="train in fp32 (default: bf16 autocast)")
    parser.add_argument("--target", choices=["local", "stream"], default="local")
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.perf_counter()

    base, tokenizer = load_model(ModelArgs(name=args.model, dtype="fp32"), device="cpu")
    base.eval()
    data_args = DataArgs(path=str(args.corpus), validation_split=0.1, max_length=256)
    data = load_calibration(data_args, tokenizer, max_rows=args.calib_rows)
    result = {"calib_rows": len(data.calibration), "held_out": len(data.held_out), **vars(args)}
    result["corpus"] = args.corpus.name
    result["base"] = perplexity(base, data)
    pruned = copy.deepcopy(base)
    grams = down_grams(pruned, data.batches())
    prune_channels(pruned, channels_to_keep(channel_importance(pruned, data.batches(), grams), args.keep), grams)
    result["refit"] = perplexity(pruned, data)
    print(json.dumps({k: result[k] for k in ("base", "refit")}), flush=True)

    batches = list(data.batches(batch_size=16))
    masks = [b["attention_mask"].bool() for b in batches]
    with torch.no_grad():
        unpruned = [base.model.embed_tokens(b["input_ids"]) for b in batches]
        stream = [h.clone() for h in unpruned]
        rope = [base.model.rotary_emb(h, torch.arange(h.shape[1]).unsqueeze(0)) for h in unpruned]
    trained_start = time.perf_counter()
    result["layers"] = []
    for index, (layer, narrow) in enumerate(zip(base.model.layers, pruned.model.layers, strict=True)):
        inputs, targets, mids = [], [], []  # mids: the pruned stream after this layer's attention, per batch
        with torch.no_grad():
            for i, mask in enumerate(masks):
                mid = after_attention(layer, unpruned[i], rope[i])
                unpruned[i] = mid + layer.mlp(layer.post_attention_layernorm(mid))
                mids.append(after_attention(narrow, stream[i], rope[i]))
                owner, stream_in = (layer, mid) if args.target == "local" else (narrow, mids[i])
                inputs.append(owner.post_attention_layernorm(stream_in)[mask])
                targets.append((unpruned[i] - stream_in)[mask])
        before, after = train_mlp(
            narrow.mlp, torch.cat(inputs), torch.cat(targets), args.epochs, args.lr, args.micro_batch, not args.fp32
        )
        with torch.no_grad():  # attention is not trained: the mids stand, the trained MLP adds to them
            stream = [mid + narrow.mlp(narrow.post_attention_layernorm(mid)) for mid in mids]
        result["layers"].append({"layer": index, "relative_error_before": before, "relative_error_after": after})
        print(f"layer {index}: relative error {before:.4f} -> {after:.4f}", flush=True)
    result["tokens"] = sum(int(m.sum()) for m in masks)
    result["train_s"] = time.perf_counter() - trained_start
    result["blockwise"] = perplexity(pruned, data)
    result["wall_s"] = time.perf_counter() - start
    print(json.dumps({k: result[k] for k in ("base", "refit", "blockwise", "tokens", "train_s", "wall_s")}))
    out = RESULTS / "prune_blockwise.json"
    runs = json.loads(out.read_text()) if out.is_file() else []
    out.write_text(json.dumps([*runs, result], indent=2))


if __name__ == "__main__":
    main()
