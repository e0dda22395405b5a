"""GPU readiness (issue 13, criterion 6): short QLoRA SFT and DPO runs on the bundled model and on
a larger preset architecture with random weights; per run: tokens/s, MFU, and the memory
planner's predicted peak vs the measured one (``torch.cuda.max_memory_allocated``).

    python bench/gpu_check.py                     # on a GPU machine (bench/gpu_check.sh runs it)
    python bench/gpu_check.py --device cpu --dry-run   # builds the configs and the predictions only

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
    """A folder with the preset's architecture, random weights and the bundled model's tokenizer."""
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


def measure(config) -> dict:
    import torch

    from tunelab.train.loop import train

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    began = time.time()
    result = train(config, force=True)
    rows = [json.loads(x) for x in (Path(result.run_dir) / "metrics.jsonl").read_text().splitlines()]
    mfus = [r["mfu"] for r in rows if "mfu" in r]
    return {
        "tokens_per_s": result.tokens_per_s,
        "mfu": statistics.median(mfus) if mfus else float("nan"),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "final_loss": result.final_loss,
        "wall_s": time.time() - began,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--dry-run", action="store_true", help="configs and planner predictions only")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunelab-gpu-check-"))
    models = {BUNDLED: BUNDLED}
    if not args.dry_run:
        models[f"{LARGER} (random)"] = str(random_weights_model(LARGER, work / "larger", args.device))
    else:
        models[f"{LARGER} (random)"] = LARGER  # the planner reads the preset; nothing is built
    rows = []
    for label, model in models.items():
        for name, config in run_configs(model, work / "runs", args.steps).items():
            row = {"model": label, "run": name, "predicted_gib": predicted_gib(config, args.device)}
            if not args.dry_run:
                row.update(measure(config))
                row["measured/predicted"] = row["peak_gib"] / row["predicted_gib"]
            rows.append(row)
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
