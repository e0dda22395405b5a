"""The fused SwiGLU + LoRA ``down_proj`` (tunelab/train/lean_mlp.py): same loss and gradients as
peft's MLP for the same dropout masks, plain paths untouched, and two intermediate-size fp32
tensors per token and layer fewer saved for backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from test_lora_dropout import P, batch, lora_model, loss_and_grads, saved_bytes

from tunelab.train.lean_mlp import _SwiGLUDownA, fuse_gated_mlps
from tunelab.train.lora_dropout import draw_seed, fold_lora_dropout, keep_mask


def test_function_equals_the_unfused_ops():
    g = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    u = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    gh, ga = torch.randn(2, 5, 12, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    torch.manual_seed(7)
    h, a = _SwiGLUDownA.apply(g, u, w, P)
    grads = torch.autograd.grad((h * gh).sum() + (a * ga).sum(), (g, u, w))
    torch.manual_seed(7)
    ref_h = F.silu(g) * u
    mask = keep_mask(ref_h.shape, 1 - P, draw_seed())
    ref_a = F.linear(ref_h * mask / (1 - P), w)
    ref = torch.autograd.grad((ref_h * gh).sum() + (ref_a * ga).sum(), (g, u, w))
    torch.testing.assert_close(h, ref_h)
    torch.testing.assert_close(a, ref_a)
    for got, want in zip(grads, ref, strict=True):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda g, u, w: _SwiGLUDownA.apply(g, u, w, 0.0), (g, u, w))


def test_fused_model_equals_peft_with_folded_dropout(tiny_model, tiny_path):
    from transformers import AutoModelForCausalLM

    fused = lora_model(tiny_model)
    reference = lora_model(AutoModelForCausalLM.from_pretrained(tiny_path, dtype="float32"))
    reference.load_state_dict(fused.state_dict())
    for m in (fused, reference):
        fold_lora_dropout(m)
        m.train()
    assert fuse_gated_mlps(fused) == tiny_model.config.num_hidden_layers
    ids = batch()
    loss, grads = loss_and_grads(fused, ids, seed=5)
    ref_loss, ref_grads = loss_and_grads(reference, ids, seed=5)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)
    # eval, no-grad and merged forwards take the model's own path
    fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(input_ids=ids).logits, reference.eval()(input_ids=ids).logits)


def test_saves_two_intermediate_tensors_fewer(tiny_model):
    model = lora_model(tiny_model)
    fold_lora_dropout(model)
    model.train()
    ids = batch()
    before = saved_bytes(model, ids)
    fuse_gated_mlps(model)
    after = saved_bytes(model, ids)
    c = tiny_model.config
    # silu(gate) and the product h, fp32, per token and layer
    assert before - after == 2 * 4 * ids.numel() * c.intermediate_size * c.num_hidden_layers


def test_without_lora_down_the_mlp_is_untouched(tiny_model):
    ids = batch()
    tiny_model.train()
    with torch.no_grad():
        before = tiny_model(input_ids=ids).logits
    assert fuse_gated_mlps(tiny_model) == tiny_model.config.num_hidden_layers  # patched, but falls back
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(input_ids=ids).logits, before, rtol=0, atol=0)
