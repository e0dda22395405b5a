"""Activation-memory levers of the loop (tunelab/train/activations.py): the same training with
and without them, partial checkpointing on the asked share of layers, glibc's mmap threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_lora_dropout import P, batch, lora_model, loss_and_grads

from tunelab.config import load_config
from tunelab.train import activations
from tunelab.train.loop import train


def losses(run_dir) -> list[float]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "mfu" in r]


def test_defaults_are_lean_with_a_tenth_checkpointed():
    t = load_config(None, ["model.name=tiny"]).training
    assert t.lean_activations and not t.map_large_blocks and t.checkpoint_fraction == 0.1
    assert activations.checkpoint_fraction(t) == 0.1
    assert activations.checkpoint_fraction(t, "prefix_tuning") == 0  # peft refuses checkpointing there
    full = load_config(None, ["model.name=tiny", "training.gradient_checkpointing=true"]).training
    assert activations.checkpoint_fraction(full) == 1.0


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 0), (0.25, 1), (0.5, 2), (1.0, 4)])
def test_checkpoint_fraction_counts_layers(tiny_model, fraction, expected):
    model = lora_model(tiny_model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert activations.checkpoint_first_layers(model, fraction) == (expected, 4)
    layers = model.base_model.model.model.layers
    assert [bool(layer.gradient_checkpointing) for layer in layers] == [i < expected for i in range(4)]


def test_partial_checkpointing_replays_the_same_dropout(tiny_model, tiny_path):
    from transformers import AutoModelForCausalLM

    cfg = load_config(None, ["model.name=tiny", "training.checkpoint_fraction=0.5"]).training
    lean = lora_model(tiny_model)
    lean.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    reference = lora_model(AutoModelForCausalLM.from_pretrained(tiny_path, dtype="float32"))
    reference.load_state_dict(lean.state_dict())
    applied = activations.apply(lean, cfg)
    assert (applied.folded_dropouts, applied.fused_mlps, applied.checkpointed_layers) == (28, 4, 2)
    reference_cfg = load_config(None, ["model.name=tiny", "training.checkpoint_fraction=0"]).training
    activations.apply(reference, reference_cfg)  # lean, nothing checkpointed
    lean.train()
    reference.train()
    ids = batch()
    loss, grads = loss_and_grads(lean, ids, seed=11)
    ref_loss, ref_grads = loss_and_grads(reference, ids, seed=11)
    assert P > 0
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_map_large_blocks_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert activations.map_large_blocks() is True


def test_loop_trains_the_same_lean_or_not(make_config):
    # no dropout (make_config): the lean path's fused MLP and the plain one give the same losses
    plain = ("training.lean_activations=false", "training.checkpoint_fraction=0", "training.map_large_blocks=false")
    fat = train(make_config("name=fat", *plain, "training.max_steps=3"))
    lean = train(make_config("name=lean", "training.checkpoint_fraction=0", "training.max_steps=3"))
    ckpt = train(make_config("name=ckpt", "training.checkpoint_fraction=0.5", "training.max_steps=3"))
    assert len(losses(fat.run_dir)) == 3
    assert losses(lean.run_dir) == pytest.approx(losses(fat.run_dir), abs=1e-5)
    assert losses(ckpt.run_dir) == pytest.approx(losses(fat.run_dir), abs=1e-5)


def test_grouped_kv_heads_reach_sdpa_unrepeated(tiny_model, monkeypatch):
    """Packed rows (a block-diagonal mask): same logits and gradients, and k/v saved with tiny's 2
    KV heads instead of repeated to its 4 query heads."""
    from test_lora_dropout import saved_bytes

    c = tiny_model.config
    model = lora_model(tiny_model, dropout=0.0)
    model.train()
    ids = batch()
    pos = torch.cat([torch.arange(5), torch.arange(7)]).expand(2, 12).contiguous()

    def run():
        torch.manual_seed(0)
        out = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        grads = torch.autograd.grad(out.square().mean(), [p for p in model.parameters() if p.requires_grad])
        return out.detach(), grads

    monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "0")
    repeated = saved_bytes(model, ids, position_ids=pos, use_cache=False)
    ref_out, ref_grads = run()
    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA")
    assert activations.grouped_kv_in_sdpa("cuda") is False
    assert activations.grouped_kv_in_sdpa("cpu") is True
    grouped = saved_bytes(model, ids, position_ids=pos, use_cache=False)
    out, grads = run()
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    head_dim = c.hidden_size // c.num_attention_heads
    kv_heads_saved = 2 * (c.num_attention_heads - c.num_key_value_heads) * head_dim * 4  # k and v, fp32
    assert repeated - grouped == kv_heads_saved * ids.numel() * c.num_hidden_layers
