#!/usr/bin/env bash
# GPU readiness check (issue 13, criterion 6); aims at under 5 minutes on one modern GPU.
#   bash bench/gpu_check.sh            # from the repository root of a checkout
# Prints nvidia-smi, then per run (QLoRA SFT and DPO on the bundled SmolLM2-135M and on the
# smollm2-1.7b architecture with random weights): tokens/s, MFU, planner-predicted vs measured
# peak memory (torch.cuda.max_memory_allocated); then, with 2+ GPUs, the 2-process DDP test on
# nccl and a 2-process FSDP run saving full state; with 1 GPU, a 1-process FSDP run saving full
# state (the accelerate get_state_dict path). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

echo "== nvidia-smi"
command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: not a CUDA machine" >&2; exit 2; }
nvidia-smi
gpus=$(nvidia-smi --list-gpus | wc -l)

echo "== environment"
if [ ! -x .venv/bin/python ]; then
  echo "no .venv: make setup (torch==2.13.0 with CUDA from the package index, tunelab, the bundled model)"
  make setup
fi
PY=.venv/bin/python
$PY - <<'PY'
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device (a CPU build of torch?)"
print("torch", torch.__version__, "cuda", torch.version.cuda, "|", torch.cuda.get_device_name(0))
PY

echo "== QLoRA SFT and DPO: tokens/s, MFU, predicted vs measured peak memory"
$PY bench/gpu_check.py --device cuda --steps 6 --json /tmp/tunelab-gpu-check.json

work=$(mktemp -d /tmp/tunelab-gpu-fsdp-XXXX)
fsdp_cfg="$work/fsdp.yaml"
sed "s/^num_processes: .*/num_processes: $(( gpus >= 2 ? 2 : 1 ))/" tunelab/presets/examples/accelerate/fsdp.yaml > "$fsdp_cfg"
run_args=(tunelab/presets/examples/sft-lora.yaml training.max_steps=4 training.save_every=2 "output_dir=$work" training.eval_every=0)
if [ "$gpus" -ge 2 ]; then
  echo "== 2 GPUs: a 2-process DDP run on nccl"
  $PY -m tunelab train "${run_args[@]}" name=ddp --nproc 2
  echo "== 2-process FSDP run, full-state checkpoint loads in one process"
  $PY -m tunelab train "${run_args[@]}" name=fsdp --nproc 2 --accelerate-config "$fsdp_cfg"
else
  echo "== 1 GPU: a 1-process FSDP run through accelerate launch (full-state save path)"
  $PY -m tunelab train "${run_args[@]}" name=fsdp --nproc 1 --accelerate-config "$fsdp_cfg"
fi
$PY - "$work/fsdp" <<'PY'
import sys
from pathlib import Path
from safetensors.torch import load_file
run = Path(sys.argv[1])
weights = load_file(str(run / "checkpoints" / "step-4" / "trainable.safetensors"))
adapter = load_file(str(run / "adapter" / "adapter_model.safetensors"))
assert weights and adapter, "empty full-state checkpoint"
print(f"FSDP full-state checkpoint: {len(weights)} trainable tensors; adapter: {len(adapter)} tensors: OK")
PY
echo "== done in $(( $(date +%s) - started )) s (target: under 300 s)"
