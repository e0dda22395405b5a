"""Weights, adapter, gradients and optimizer state of the plan equal the bytes of real tensors.

Each test attaches the method to the loaded ``tiny`` model with peft (or freezes layers the way
tunelab does), runs one AdamW step so gradients and moments exist, and compares
``numel · element_size`` of those tensors with the plan, exactly. Activations saved for
backward are compared with what ``saved_tensors_hooks`` sees (tests/memory/measure.py).
"""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.memory import AdapterShape, TrainSpec, architecture_from_config, plan_training, trainable
from tunelab.memory.activations import ActivationSetup, activation_bytes

from .measure import saved_bytes

SHAPE = AdapterShape(r=8, dropout=0.05, num_virtual_tokens=16, adapter_len=10, adapter_layers=2, freeze_train_layers=2)


def _attach(model, adapter: str):
    from peft import AdaptionPromptConfig, LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

    configs = {
        "lora": lambda: LoraConfig(r=8, target_modules="all-linear", lora_dropout=0.05, task_type="CAUSAL_LM"),
        "dora": lambda: LoraConfig(
            r=8, target_modules="all-linear", lora_dropout=0.05, use_dora=True, task_type="CAUSAL_LM"
        ),
        "prompt_tuning": lambda: PromptTuningConfig(num_virtual_tokens=16, task_type="CAUSAL_LM"),
        "prefix_tuning": lambda: PrefixTuningConfig(num_virtual_tokens=16, task_type="CAUSAL_LM"),
        "llama_adapter": lambda: AdaptionPromptConfig(adapter_len=10, adapter_layers=2, task_type="CAUSAL_LM"),
    }
    if adapter in configs:
        return get_peft_model(model, configs[adapter]())
    if adapter == "freeze":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in [*model.model.layers[-2:].parameters(), *model.model.norm.parameters()]:
            p.requires_grad_(True)
    return model


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.fixture()
def tiny_arch(tiny_path):
    return architecture_from_config(json.loads((tiny_path / "config.json").read_text()))


METHODS = ["full", "lora", "dora", "prompt_tuning", "prefix_tuning", "llama_adapter", "freeze"]


@pytest.mark.parametrize("adapter", METHODS)
def test_static_bytes_equal_tensors(adapter, tiny_model, tiny_arch):
    base_bytes = _nbytes(tiny_model.parameters())
    model = _attach(tiny_model, adapter)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    ids = torch.randint(0, tiny_arch.vocab_size, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    plan = plan_training(TrainSpec(arch=tiny_arch, adapter=adapter, shape=SHAPE, precision="fp32", device="cpu"))
    trained = _nbytes(params)
    assert plan.trainable * 4 == trained
    assert plan.weights == base_bytes
    assert plan.adapter == (0 if adapter in ("full", "freeze") else trained)
    assert plan.gradients == _nbytes(p.grad for p in params)
    states = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    assert plan.optimizer == _nbytes(states)


def test_adamw_8bit_state_formula():
    """One tensor of 10,000 (8-bit: 2·(10,000 + 4·40)) and one of 100 (fp32 moments: 800)."""
    from tunelab.memory.optimizers import adamw_8bit_bytes

    assert adamw_8bit_bytes([10_000, 100], 4) == 2 * (10_000 + 4 * 40) + 800


@pytest.mark.parametrize("adapter", METHODS)
def test_activations_match_saved_tensors(adapter, tiny_model, tiny_arch):
    """The inventory predicts what autograd keeps (bf16 autocast on CPU) within 15 %, most within 2 %."""
    model = _attach(tiny_model, adapter)
    model.train()
    batch = {"input_ids": torch.randint(0, tiny_arch.vocab_size, (3, 40))}
    measured = saved_bytes(model, batch, autocast=True, vocab=tiny_arch.vocab_size).activations
    setup = ActivationSetup(tiny_arch, trainable(tiny_arch, adapter, SHAPE), masked=False, device="cpu")
    predicted = activation_bytes(setup, 3, 40)
    tolerance = 0.15 if adapter in ("dora", "prefix_tuning") else 0.02
    assert abs(predicted / measured - 1) < tolerance


@pytest.mark.parametrize("autocast", [True, False])
def test_lean_activations_match_saved_tensors(autocast, tiny_model, tiny_arch):
    """training.lean_activations (folded LoRA dropout, fused SwiGLU + LoRA down_proj): the inventory
    predicts what autograd keeps within 2 %, and less than peft's plain path."""
    from tunelab.train.lean_mlp import fuse_gated_mlps
    from tunelab.train.lora_dropout import fold_lora_dropout

    model = _attach(tiny_model, "lora")
    fold_lora_dropout(model)
    fuse_gated_mlps(model)
    model.train()
    batch = {"input_ids": torch.randint(0, tiny_arch.vocab_size, (3, 40))}
    measured = saved_bytes(model, batch, autocast=autocast, vocab=tiny_arch.vocab_size).activations
    c = 2 if autocast else 4
    t = trainable(tiny_arch, "lora", SHAPE)
    setup = ActivationSetup(tiny_arch, t, compute_bytes=c, autocast=autocast, masked=False, device="cpu", lean=True)
    predicted = activation_bytes(setup, 3, 40)
    assert abs(predicted / measured - 1) < 0.02
    plain = ActivationSetup(**{**setup.__dict__, "lean": False})
    assert activation_bytes(plain, 3, 40) > predicted


def test_partial_checkpointing_keeps_the_inputs_of_the_checkpointed_blocks(tiny_arch):
    """A quarter of tiny's 4 blocks checkpointed: one block's saved tensors become its fp32 input."""
    from tunelab.memory.activations import head_bytes, layer_bytes, mask_bytes, partial_checkpoint_bytes

    setup = ActivationSetup(tiny_arch, trainable(tiny_arch, "lora", SHAPE), device="cpu", lean=True)
    rows, seq, h = 2, 64, tiny_arch.hidden_size
    tokens = rows * seq
    expected = tokens * (3 * layer_bytes(setup) + 4 * h + head_bytes(setup)) + rows * mask_bytes(setup, seq)
    assert partial_checkpoint_bytes(setup, rows, seq, 0.25) == expected
    assert partial_checkpoint_bytes(setup, rows, seq, 0) == activation_bytes(setup, rows, seq)
    assert partial_checkpoint_bytes(setup, rows, seq, 1) == activation_bytes(setup, rows, seq, checkpointing=True)
    spec = TrainSpec(arch=tiny_arch, shape=SHAPE, precision="fp32", device="cpu", batch_size=rows, seq_len=seq)
    full = plan_training(spec)
    quarter = plan_training(TrainSpec(**{**spec.__dict__, "checkpoint_fraction": 0.25}))
    assert quarter.activations < full.activations
