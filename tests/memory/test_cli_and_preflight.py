"""`tunelab plan` end to end (in a subprocess: it must not import torch) and the pre-flight check."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tunelab.config import load_config
from tunelab.errors import ConfigError
from tunelab.memory import GIB, TrainSpec, find_fit, plan_training, preset_architecture
from tunelab.memory.formats import kv_cache_bytes, nf4_bits_per_weight, weight_bytes
from tunelab.memory.preflight import check_fits

PLAN = "import sys; from tunelab.cli.main import main; rc = main(sys.argv[1:]); print('TORCH', 'torch' in sys.modules, file=sys.stderr); sys.exit(rc)"  # noqa: E501 - one-line program


def run_plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PLAN, "plan", *args], capture_output=True, text=True, timeout=120)


def test_seed_rule_prints_16_8_and_8_4_gb_without_torch():
    sixteen = run_plan("--params", "7e9", "--bits", "16", "--seed-rule")
    eight = run_plan("--params", "7e9", "--bits", "8", "--seed-rule")
    assert sixteen.returncode == 0 and "16.8 GB" in sixteen.stderr
    assert eight.returncode == 0 and "8.4 GB" in eight.stderr
    assert "TORCH False" in sixteen.stderr


def test_json_plan_has_the_promised_keys_and_sums(tmp_path):
    out = run_plan("--model", "llama-3.1-8b", "--method", "qlora", "--batch-size", "2", "--seq-len", "2048",
                   "--gradient-checkpointing", "--json")
    assert out.returncode == 0, out.stderr
    assert "TORCH False" in out.stderr
    data = json.loads(out.stdout)
    assert {"weights", "gradients", "optimizer", "activations", "kv_cache", "overhead"} <= set(data["breakdown"])
    assert data["total_gib"] == pytest.approx(sum(data["breakdown"].values()), abs=1e-3)
    assert data["seed_rule_gib"] == pytest.approx(8_030_261_248 * 4 / 8 * 1.2 / GIB, abs=1e-3)


def test_run_folder_dpo_doubles_rows(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "dpo", "model": {"name": "smollm2-135m"},
                                                    "training": {"micro_batch_size": 2}, "data": {"max_length": 128}}))
    dpo = json.loads(run_plan("--model", str(run), "--json").stdout)
    sft = json.loads(run_plan("--model", str(run), "--method", "sft", "--json").stdout)
    assert dpo["breakdown"]["activations"] == pytest.approx(2 * sft["breakdown"]["activations"], rel=1e-3)
    assert dpo["breakdown"]["logits"] == pytest.approx(2 * sft["breakdown"]["logits"], rel=1e-3)


def test_unknown_model_is_a_clear_error():
    out = run_plan("--model", "no-such-model-xyz")
    assert out.returncode == 2 and "presets:" in out.stderr and "Traceback" not in out.stderr


def test_kv_cache_and_quant_by_hand():
    llama = preset_architecture("llama-2-7b")
    assert kv_cache_bytes(llama, 4096, 1, "bf16") == 2 * 32 * 4096 * 4096 * 2 == 2 * GIB
    assert nf4_bits_per_weight(False) == 4.5
    assert nf4_bits_per_weight(True) == pytest.approx(4 + 0.125 + 32 / 16384)
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType.Q8_0]
    assert weight_bytes(llama, "q8_0") == pytest.approx(
        (6_738_415_616 - 32 * 2 * 4096 - 4096) * size / block + (32 * 2 * 4096 + 4096) * 4
    )


def test_checkpointing_and_8bit_shrink_and_fit_finds_cheapest():
    spec = TrainSpec(arch=preset_architecture("llama-3.1-8b"), adapter="lora", batch_size=4, seq_len=2048)
    plan = plan_training(spec)
    ckpt = plan_training(TrainSpec(**{**spec.__dict__, "gradient_checkpointing": True}))
    assert ckpt.activations < plan.activations / 5
    budget = ckpt.total + 1
    assert plan.total > budget
    fit = find_fit(spec, budget)
    assert fit.fits and fit.changes == ("enable gradient checkpointing",)


def test_zero3_shards_weights_gradients_and_optimizer():
    arch = preset_architecture("llama-2-7b")
    one = plan_training(TrainSpec(arch=arch, adapter="full"))
    eight = plan_training(TrainSpec(arch=arch, adapter="full", gpus=8, sharding="zero3"))
    assert eight.weights == pytest.approx(one.weights / 8)
    assert eight.optimizer == pytest.approx(one.optimizer / 8)
    assert eight.activations == one.activations


def test_preflight_refuses_with_plan_and_change_and_force_overrides():
    config = load_config(overrides=["model.name=tiny", "training.micro_batch_size=8", "data.max_length=512"])
    plan = check_fits(config, free_bytes=10 * GIB, device_name="cpu")
    assert plan.total < 10 * GIB
    with pytest.raises(ConfigError) as err:
        check_fits(config, free_bytes=int(plan.total * 0.9), device_name="cpu")
    message = str(err.value)
    assert "suggested change" in message and "total" in message and "--force" in message
    assert check_fits(config, free_bytes=1, device_name="cpu", force=True).total == plan.total


def test_preflight_maps_cpu_run_to_fp32_master_weights_with_autocast():
    config = load_config(overrides=["model.name=tiny", "adapter.type=full", "training.precision=bf16"])
    plan = check_fits(config, free_bytes=100 * GIB, device_name="cpu")
    assert plan.weights == plan.params * 4
    assert plan.weight_copies > 0  # autocast keeps 16-bit copies of the fp32 weights
