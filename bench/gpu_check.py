"""GPU readiness (issue 13, criterion 6): short QLoRA SFT and DPO runs on the bundled model and on
a larger preset architecture with random weights; per run: tokens/s, MFU, and the memory
planner's predicted peak vs the measured one (``torch.cuda.max_memory_allocated``).

    python bench/gpu_check.py                     # on a GPU machine (bench/gpu_check.sh runs it)
    python bench/gpu_check.py --device cpu --dry-run   # builds the configs and the predictions only
    python bench/gpu_check.py --device cpu --bundled tiny --larger ""   # the whole path on CPU, in seconds

Random weights are enough here: speed and memory depend on the architecture, not on the values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "tunelab" / "presets" / "examples"
BUNDLED = "smollm2-135m-instruct"
LARGER = "smollm2-1.7b"  # same tokenizer (vocab 49152) as the bundled model


def random_weights_model(preset: str, out: Path, device: str) -> Path:
    """A folder with the preset's architecture, random weights and the bundled model's tokenizer
    (the preset must share its vocabulary, as smollm2-1.7b does)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tunelab.models.resolve import resolve_model

    presets = json.loads((ROOT / "tunelab" / "presets" / "models.json").read_text())["models"]
    fields = dict(presets[preset]["config"])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(resolve_model(BUNDLED).path).save_pretrained(out)
    return out


def run_configs(model: str, out: Path, steps: int) -> dict:
    """name -> RunConfig: QLoRA SFT on the quickstart data and QLoRA DPO on the preference data."""
    from tunelab.config import load_config

    common = [f"model.name={model}", "model.quantization=nf4", "adapter.type=qlora", f"training.max_steps={steps}"]
    common += ["training.eval_every=0", "training.save_every=0", f"output_dir={out}", "training.log_every=1"]
    sft = load_config(EXAMPLES / "sft-qlora.yaml", [*common, f"data.path={EXAMPLES / 'data' / 'quickstart.jsonl'}"])
    dpo = load_config(EXAMPLES / "dpo.yaml", [*common, f"data.path={EXAMPLES / 'data' / 'preferences.jsonl'}"])
    return {"sft-qlora": sft, "dpo-qlora": dpo}


def predicted_gib(config, device: str) -> float:
    from tunelab.memory.estimate import GIB
    from tunelab.memory.preflight import spec_from_config
    from tunelab.memory.training import plan_training

    return plan_training(spec_from_config(config, device)).total / GIB


def measure(config, device: str) -> dict:
    """One short run; peak memory is ``max_memory_allocated`` on a GPU, the process's peak RSS on CPU."""
    import resource

    import torch

    from tunelab.train.loop import train

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    began = time.time()
    result = train(config, force=True)
    rows = [json.loads(x) for x in (Path(result.run_dir) / "metrics.jsonl").read_text().splitlines()]
    mfus = [r["mfu"] for r in rows if "mfu" in r]
    return {
        "tokens_per_s": result.tokens_per_s,
        "mfu": statistics.median(mfus) if mfus else float("nan"),
        "peak_gib": (
            torch.cuda.max_memory_allocated() / 2**30
            if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        ),
        "final_loss": result.final_loss,
        "wall_s": time.time() - began,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--dry-run", action="store_true", help="configs and planner predictions only")
    parser.add_argument("--bundled", default=BUNDLED, help="the real model (default: the bundled one)")
    parser.add_argument("--larger", default=LARGER, help="preset built with random weights; '' skips it")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunelab-gpu-check-"))
    models = {args.bundled: args.bundled}
    if args.larger and not args.dry_run:
        models[f"{args.larger} (random)"] = str(random_weights_model(args.larger, work / "larger", args.device))
    elif args.larger:
        models[f"{args.larger} (random)"] = args.larger  # the planner reads the preset; nothing is built
    rows = []
    for label, model in models.items():
        for name, config in run_configs(model, work / "runs", args.steps).items():
            row = {"model": label, "run": name, "predicted_gib": predicted_gib(config, args.device)}
            if not args.dry_run:
                row.update(measure(config, args.device))
                row["measured/predicted"] = row["peak_gib"] / row["predicted_gib"]
            rows.append(row)
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
