"""The accelerate configs in examples/accelerate/ are valid for accelerate, save full state, and
map to the memory planner's sharding modes (FSDP FULL_SHARD <-> zero3, SHARD_GRAD_OP <-> zero2,
DeepSpeed ZeRO-2/3 <-> zero2/zero3, DDP <-> ddp), whose per-GPU arithmetic is then checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunelab.errors import ConfigError
from tunelab.memory.accelerate_config import planner_sharding, read_accelerate_config
from tunelab.memory.sharding import shard

ROOT = Path(__file__).resolve().parents[2] / "tunelab" / "presets" / "examples" / "accelerate"
EXPECTED = {  # file -> (planner sharding, GPUs)
    "ddp.yaml": ("ddp", 2),
    "fsdp.yaml": ("zero3", 4),
    "deepspeed-zero2.yaml": ("zero2", 4),
    "deepspeed-zero3.yaml": ("zero3", 8),
}


def _cfg(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_every_config_is_listed():
    assert sorted(p.name for p in ROOT.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_maps_to_the_planner_mode(name):
    mode, gpus = EXPECTED[name]
    got = read_accelerate_config(ROOT / name)
    assert (got.sharding, got.gpus, got.offload) == (mode, gpus, False)
    # the planner's arithmetic for that mode: weights W, gradients G, optimizer O (bytes)
    w, g, o = 16.0, 4.0, 8.0
    per_gpu = shard(got.sharding, got.gpus, got.offload, weights=w, gradients=g, optimizer=o)
    expected = {"ddp": (w, 2 * g, o), "zero2": (w, g / gpus, o / gpus), "zero3": (w / gpus, g / gpus, o / gpus)}
    assert (per_gpu.weights, per_gpu.gradients, per_gpu.optimizer) == expected[mode]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_reads_the_config(name):
    """accelerate's own loader accepts every key (it refuses unknown ones)."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / name))
    assert config.num_processes == EXPECTED[name][1]


def test_checkpoints_are_saved_full_state():
    assert _cfg("fsdp.yaml")["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    ds3 = _cfg("deepspeed-zero3.yaml")["deepspeed_config"]
    assert ds3["zero3_save_16bit_model"] is True  # accelerate's stage3_gather_16bit_weights_on_model_save
    for name in ("deepspeed-zero2.yaml", "deepspeed-zero3.yaml"):  # DeepSpeed steps inside backward
        assert _cfg(name)["deepspeed_config"]["gradient_accumulation_steps"] == 1


def test_other_strategies_and_offload():
    fsdp = _cfg("fsdp.yaml")
    fsdp["fsdp_config"]["fsdp_reshard_after_forward"] = False  # FSDP2 SHARD_GRAD_OP
    assert planner_sharding(fsdp).sharding == "zero2"
    fsdp1 = {"distributed_type": "FSDP", "num_processes": 2, "fsdp_config": {"fsdp_sharding_strategy": "SHARD_GRAD_OP"}}
    assert planner_sharding(fsdp1).sharding == "zero2"
    fsdp1["fsdp_config"] = {"fsdp_reshard_after_forward": "FULL_SHARD", "fsdp_offload_params": True}
    assert planner_sharding(fsdp1) == planner_sharding(fsdp1).__class__("zero3", 2, True)
    ds = _cfg("deepspeed-zero3.yaml")
    ds["deepspeed_config"]["offload_optimizer_device"] = "cpu"
    assert planner_sharding(ds).offload
    assert planner_sharding({"distributed_type": "MULTI_GPU", "num_processes": 1}).sharding == "none"
    with pytest.raises(ConfigError, match="valid"):
        planner_sharding({"distributed_type": "FSDP", "fsdp_config": {"fsdp_sharding_strategy": "HALF"}})
    with pytest.raises(ConfigError, match="MEGATRON_LM"):
        planner_sharding({"distributed_type": "MEGATRON_LM"})


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_plan_reads_the_config(name, capsys):
    """``tunelab plan --accelerate-config F`` is the plan of ``--gpus N --sharding S`` it maps to."""
    from tunelab.cli.main import main

    def plan(*flags: str) -> str:
        assert main(["plan", "--model", "llama-3.1-8b", "--method", "qlora", "--json", *flags]) == 0
        return capsys.readouterr().out

    mode, gpus = EXPECTED[name]
    assert plan("--accelerate-config", str(ROOT / name)) == plan("--gpus", str(gpus), "--sharding", mode)
    assert plan("--accelerate-config", str(ROOT / name)) != plan()  # it changed the per-GPU numbers
