#!/usr/bin/env bash
# Arena on the bundled model: SmolLM2-135M-Instruct against two short fine-tunes of it, judged by
# a reward model trained on examples/data/preferences.jsonl and by the base model as an LLM judge.
# The numbers in docs/evaluation.md ("Arena: worked example") come from this script.
# Sized for a shared 2-core CPU (12 steps each, short sequences); on a GPU raise the steps.
# Run: bash bench/arena_bundled.sh [WORKDIR]   (default /tmp/arena_bundled)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-/tmp/arena_bundled}
T="${TUNELAB:-.venv/bin/tunelab}"
C="output_dir=$W/runs training.eval_every=1000 training.save_every=1000 training.max_steps=12"
[ -d "$W/runs/arena-sft/adapter" ] || $T train examples/sft-lora.yaml name=arena-sft data.max_length=96 \
  training.micro_batch_size=4 training.gradient_accumulation=1 training.learning_rate=1e-3 $C
[ -d "$W/runs/arena-dpo/adapter" ] || $T train examples/dpo.yaml name=arena-dpo data.max_length=128 \
  training.micro_batch_size=2 $C
[ -f "$W/runs/arena-rm/reward_head.safetensors" ] || $T train examples/reward.yaml name=arena-rm \
  data.max_length=128 training.micro_batch_size=2 $C
MODELS="smollm2-135m-instruct $W/runs/arena-sft $W/runs/arena-dpo"
$T arena run --models $MODELS --prompts examples/data/quickstart_eval.jsonl --judge "reward:$W/runs/arena-rm" \
  --out "$W/arena" --max-new-tokens 48 --anchor smollm2-135m-instruct
# the same answers (answers.jsonl is reused, nothing is generated again), judged by the base model itself
mkdir -p "$W/arena-llm" && cp "$W/arena/answers.jsonl" "$W/arena-llm/"
$T arena run --models $MODELS --prompts examples/data/quickstart_eval.jsonl --judge llm:smollm2-135m-instruct \
  --out "$W/arena-llm" --max-new-tokens 48 --anchor smollm2-135m-instruct
