"""The training-code terms of the planner (chunked loss, optimizer in backward, activation offloading,
old bitsandbytes' kept inputs, a retained graph, a quantized head, checkpointing phases), by hand on
Llama-2-7B's shapes: h = 4096, i = 11008, 32 layers, vocabulary 32,000, untied head."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tunelab.memory import AdapterShape, TrainSpec, plan_training
from tunelab.memory.sources import load_model_source

H, FFN, L, V = 4096, 11008, 32, 32000
B, T = 2, 512
N = B * T
QV = AdapterShape(r=8, target_modules=("q_proj", "v_proj"), dropout=0.0)


@pytest.fixture(scope="module")
def spec() -> TrainSpec:
    arch = load_model_source("llama-2-7b").arch
    return TrainSpec(arch=arch, adapter="lora", batch_size=B, seq_len=T, precision="bf16", shape=QV, overhead=0.0)


def test_chunked_loss_keeps_only_16_bit_logits(spec):
    full, chunked = plan_training(spec), plan_training(replace(spec, loss="chunked"))
    assert full.logits == N * V * 12  # max(c + 8, 12) with c = 2
    assert chunked.logits == N * V * 2


def test_old_bitsandbytes_keeps_every_4bit_input(spec):
    qlora = replace(spec, adapter="qlora", quantization="nf4")
    base = plan_training(qlora)
    kept = plan_training(replace(qlora, quantized_inputs_saved=True))
    # per block: attention input + o_proj input + MLP input + down_proj input, 2 B each; block 0's
    # attention input needs no gradient (embeddings frozen)
    per_token = L * 2 * (H + H + H + FFN) - 2 * H
    assert kept.activations - base.activations == N * per_token
    head = plan_training(replace(qlora, quantized_inputs_saved=True, quantize_head=True))
    assert head.activations - base.activations == N * (per_token + 2 * H)
    # bitsandbytes >= 0.45 and unquantized runs keep nothing extra
    assert plan_training(replace(spec, quantized_inputs_saved=True)).activations == plan_training(spec).activations


def test_previous_graph_holds_its_ctx_inputs_and_logits(spec):
    qlora = replace(spec, adapter="qlora", quantization="nf4", quantized_inputs_saved=True)
    kept = plan_training(qlora)
    retained = plan_training(replace(qlora, keeps_previous_graph=True))
    inputs = N * (L * 2 * (3 * H + FFN) - 2 * H)
    assert retained.activations - kept.activations == inputs + N * V * 2
    # a bf16 LoRA run frees its saved tensors in backward: only the old logits remain
    lora = plan_training(replace(spec, keeps_previous_graph=True))
    assert lora.activations - plan_training(spec).activations == N * V * 2


def test_quantized_head_weights_and_dequantize_copies(spec):
    qlora = replace(spec, adapter="qlora", quantization="nf4", double_quant=False)
    plain, head = plan_training(qlora), plan_training(replace(qlora, quantize_head=True, dequant_copies=2))
    assert head.weights - plain.weights == pytest.approx(V * H * (4.5 / 8 - 2))  # bf16 head -> NF4 (4 + 32/64 bits)
    assert plain.weight_copies == FFN * H * 2  # largest block linear, dequantized once to bf16
    assert head.weight_copies == 2 * V * H * 2  # the head: fp16 dequantize, then the bf16 cast


def test_optimizer_in_backward_keeps_one_gradient(spec):
    full = replace(spec, adapter="full", shape=AdapterShape())
    assert plan_training(replace(full, optimizer_in_backward=True)).gradients == V * H * 2  # embedding/head
    assert plan_training(full).gradients == 6_738_415_616 * 2


def test_activation_offloading_moves_block_inputs(spec):
    ckpt = replace(spec, gradient_checkpointing=True)
    kept, offloaded = plan_training(ckpt), plan_training(replace(ckpt, offload_activations=True))
    block_inputs = N * L * 2 * H  # bf16 residual stream at every block input
    assert offloaded.cpu_offload == block_inputs
    assert kept.activations - offloaded.activations == block_inputs


def test_checkpointing_frees_logits_before_recompute(spec):
    from tunelab.memory.activations import recompute_bytes
    from tunelab.memory.trainable import trainable
    from tunelab.memory.training import _activation_setup

    ckpt = replace(spec, gradient_checkpointing=True)
    plan = plan_training(ckpt)
    recompute = recompute_bytes(_activation_setup(ckpt, trainable(ckpt.arch, "lora", QV)), B, T)
    assert 0 < recompute < plan.logits
    # no accumulation: gradients overlap the transients too (min of the two), on top of the phases
    assert plan.overlap == -recompute - min(plan.gradients, plan.activations + plan.logits - recompute)


def test_checkpointing_keeps_the_head_copy_under_autocast(spec):
    mixed = replace(spec, precision="mixed", gradient_checkpointing=True)
    assert plan_training(mixed).weight_copies == 2 * V * H  # blocks recomputed; the head keeps its bf16 copy
