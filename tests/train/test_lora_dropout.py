"""LoRA dropout folded into ``lora_A`` (tunelab/train/lora_dropout.py): the same values and
gradients as peft's ``dropout`` module + ``lora_A`` linear for the same keep-mask, the same
distribution, and a 1-byte mask saved for backward instead of two fp32 copies."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.autograd.graph import saved_tensors_hooks

from tunelab.train.lora_dropout import MaskedDropoutLinear, _MaskedDropLinear, draw_seed, fold_lora_dropout, keep_mask

P = 0.3


class BoolMaskDropout(nn.Module):
    """peft's dropout slot, drawing its mask exactly as the folded function does (reference)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x):
        return x * keep_mask(x.shape, 1 - self.p, draw_seed()) / (1 - self.p)


def lora_model(tiny_model, dropout: float = P):
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(tiny_model, cfg)


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randint(4, 500, (2, 12), generator=g)


def loss_and_grads(model, ids, seed: int):
    torch.manual_seed(seed)
    loss = F.cross_entropy(model(input_ids=ids).logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_function_equals_dropout_then_linear_for_the_same_mask():
    x = torch.randn(3, 5, 7, requires_grad=True)
    w = torch.randn(4, 7, requires_grad=True)
    g_out = torch.randn(3, 5, 4)
    torch.manual_seed(1)
    out = _MaskedDropLinear.apply(x, w, P)
    gx, gw = torch.autograd.grad(out, (x, w), g_out)
    torch.manual_seed(1)
    mask = keep_mask(x.shape, 1 - P, draw_seed())
    ref = F.linear(x * mask / (1 - P), w)
    rx, rw = torch.autograd.grad(ref, (x, w), g_out)
    assert 0 < int(mask.sum()) < mask.numel()  # the mask drops some elements and keeps others
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(gx, rx, rtol=0, atol=1e-6)
    torch.testing.assert_close(gw, rw, rtol=0, atol=1e-5)
    # a dropped element gets no gradient, a kept one 1/(1-p) of the undropped gradient
    undropped = g_out @ w.detach()
    torch.testing.assert_close(gx, undropped * mask / (1 - P), rtol=0, atol=1e-6)


def test_keep_rate_and_scaling_are_dropouts():
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    out = _MaskedDropLinear.apply(x, torch.eye(1000), P)  # identity weight: out = the dropped input
    values = set(out.unique().tolist())
    assert values <= {0.0, 1 / (1 - P)} or torch.allclose(out.unique(), torch.tensor([0.0, 1 / (1 - P)]))
    kept = float((out != 0).float().mean())
    # 1e6 Bernoulli(0.7) draws: standard deviation 4.6e-4, so 5 sigma is 2.3e-3 (the keep rate's
    # rounding to 1/65536 moves it by at most 7.6e-6)
    assert abs(kept - (1 - P)) < 2.3e-3
    assert abs(float(out.mean()) - 1.0) < 2.3e-3 / (1 - P)  # inverted scaling keeps the mean


def test_folded_model_equals_peft_with_the_same_masks(tiny_model, tiny_path):
    from transformers import AutoModelForCausalLM

    folded = lora_model(tiny_model)
    reference = lora_model(AutoModelForCausalLM.from_pretrained(tiny_path, dtype="float32"))
    reference.load_state_dict(folded.state_dict())
    keys = set(folded.state_dict())
    assert fold_lora_dropout(folded) == 7 * tiny_model.config.num_hidden_layers
    assert set(folded.state_dict()) == keys  # the saved adapter is unchanged
    for module in reference.modules():
        if isinstance(getattr(module, "lora_dropout", None), nn.ModuleDict):
            module.lora_dropout["default"] = BoolMaskDropout(P)
    folded.train()
    reference.train()
    ids = batch()
    loss, grads = loss_and_grads(folded, ids, seed=3)
    ref_loss, ref_grads = loss_and_grads(reference, ids, seed=3)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) == 2 * 7 * tiny_model.config.num_hidden_layers
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)
    # a different seed draws different masks: dropout is really on
    other, _ = loss_and_grads(folded, ids, seed=4)
    assert abs(float(other - loss)) > 1e-6


def test_eval_mode_and_merged_adapters_are_unchanged(tiny_model):
    model = lora_model(tiny_model)
    model.eval()
    ids = batch()
    with torch.no_grad():
        before = model(input_ids=ids).logits
        fold_lora_dropout(model)
        after = model(input_ids=ids).logits
        torch.testing.assert_close(after, before, rtol=0, atol=0)
        merged = model.merge_and_unload()(input_ids=ids).logits
    torch.testing.assert_close(merged, before, rtol=1e-5, atol=1e-5)


def test_not_folded_without_dropout_or_for_dora(tiny_model, tiny_path):
    from transformers import AutoModelForCausalLM

    assert fold_lora_dropout(lora_model(tiny_model, dropout=0.0)) == 0
    dora = LoraConfig(r=4, lora_alpha=8, lora_dropout=P, target_modules="all-linear", use_dora=True)
    assert fold_lora_dropout(get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_path), dora)) == 0


def saved_bytes(model, ids, dtype: torch.dtype | None = None, **inputs) -> int:
    """Bytes of the distinct non-parameter storages one forward saves for backward (of ``dtype`` only)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and (dtype is None or t.dtype == dtype):
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, **inputs)
    return sum(seen.values())


def test_keep_mask_is_a_function_of_its_seed_with_the_rounded_keep_rate():
    a, b = keep_mask((300, 301), 0.9, seed=11), keep_mask((300, 301), 0.9, seed=11)
    assert a.dtype == torch.bool and a.shape == (300, 301) and torch.equal(a, b)
    assert not torch.equal(a, keep_mask((300, 301), 0.9, seed=12))
    # keep 0.95 is 62259.2 / 65536 -> 62259 lanes of 65536 below the threshold: P = 0.949997
    rate = float(keep_mask((4_000_000,), 0.95, seed=3).float().mean())
    assert abs(rate - 62259 / 65536) < 5 * (0.95 * 0.05 / 4e6) ** 0.5
    assert not keep_mask((1000,), 0.0, seed=1).any() and keep_mask((1000,), 1.0, seed=1).all()
    # elements are independent: neighbouring lanes of one 64-bit word agree as often as chance says
    m = keep_mask((4, 1_000_000), 0.5, seed=5).float()
    assert abs(float((m[:, :-1] == m[:, 1:]).float().mean()) - 0.5) < 5 * (0.25 / 4e6) ** 0.5


def test_saves_neither_a_mask_nor_fp32_copies(tiny_model):
    model = lora_model(tiny_model)
    model.train()
    ids = batch()
    c = tiny_model.config
    # inputs of the adapted linears per token and layer: q, k, v, o, gate, up read the hidden
    # size, down the intermediate size
    widths = (6 * c.hidden_size + c.intermediate_size) * ids.numel() * c.num_hidden_layers
    plain = saved_bytes(model, ids)
    assert saved_bytes(model, ids, torch.bool) == 0
    fold_lora_dropout(model)
    lean = saved_bytes(model, ids)
    assert saved_bytes(model, ids, torch.bool) == 0  # the mask is redrawn from its seed in backward
    # peft saves a fp32 keep-mask (where the input needs a gradient) and the fp32 dropped copy
    # per dropout element; folded: only the (shared) fp32 input per linear group
    assert plain - lean >= 5 * widths
    assert isinstance(model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"], MaskedDropoutLinear)
