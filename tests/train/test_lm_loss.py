"""The chunked, recomputed LM-head log-probs (tunelab/methods/lm_loss.py) equal the plain path
(``model(...).logits`` + cross-entropy) in value and in every gradient, within 1e-5 on tiny."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunelab.methods import lm_loss
from tunelab.methods.lm_loss import hidden_states_as_logits, next_token_logps
from tunelab.methods.logprobs import completion_logps, token_logps
from tunelab.methods.sft import token_nll


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    # 3 rows of tiny's 512-token vocabulary per chunk: every batch below spans several chunks.
    monkeypatch.setattr(lm_loss, "CHUNK_ELEMENTS", 3 * 512)


def sft_batch(seed: int = 0, packed: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 500, (3, 20), generator=g)
    labels = ids.clone()
    labels[:, :6] = -100  # a prompt
    labels[2, 15:] = -100  # padding of a shorter row
    if packed:  # two examples in each row, positions restarting at 0
        pos = torch.cat([torch.arange(9), torch.arange(11)]).expand(3, 20).contiguous()
        labels[:, 9:12] = -100
        return {"input_ids": ids, "position_ids": pos, "labels": labels}
    mask = (labels != -100) | (torch.arange(20) < 6)
    return {"input_ids": ids, "attention_mask": mask.long(), "labels": labels}


def plain_sft(model, batch):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    nll, count = token_nll(model(**inputs, use_cache=False).logits, batch["labels"])
    return nll / count


def chunked_sft(model, batch):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logps = next_token_logps(model, inputs, batch["labels"])
    return -logps.sum() / (batch["labels"][:, 1:] != -100).sum()


def grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(model, plain, chunked):
    a = grads(model, plain)
    b = grads(model, chunked)
    assert torch.allclose(plain, chunked, atol=1e-5, rtol=0)
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-5), name


def lora(model, **kwargs):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=4, lora_dropout=0.0, target_modules="all-linear", **kwargs))


@pytest.mark.parametrize("packed", [False, True])
def test_sft_loss_and_lora_grads_equal_the_plain_path(tiny_model, packed):
    model = lora(tiny_model)
    torch.manual_seed(0)
    for n, p in model.named_parameters():  # LoRA B starts at 0; make every gradient path non-trivial
        if "lora_B" in n:
            p.data.normal_(0, 0.1)
    batch = sft_batch(packed=packed)
    assert_same(model, plain_sft(model, batch), chunked_sft(model, batch))


def test_full_fine_tuning_grads_include_the_tied_head(tiny_model):
    assert tiny_model.lm_head.weight is tiny_model.model.embed_tokens.weight
    batch = sft_batch(1)
    plain, chunked = plain_sft(tiny_model, batch), chunked_sft(tiny_model, batch)
    assert_same(tiny_model, plain, chunked)
    # the head's own share of the gradient goes through the custom backward
    assert tiny_model.model.embed_tokens.weight.grad.abs().sum() > 0


def test_completion_logps_and_grads_equal_the_plain_path(tiny_model):
    model = lora(tiny_model)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(4, 500, (4, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    comp = torch.zeros_like(ids)
    comp[:, 7:] = 1
    comp = comp * mask
    batch = {"input_ids": ids, "attention_mask": mask, "completion_mask": comp}

    def plain():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return (token_logps(logits, ids) * comp[:, 1:]).sum(-1)

    ours, counts = completion_logps(model, batch)
    assert counts.tolist() == comp[:, 1:].sum(-1).tolist()
    # any downstream loss, per token (a DPO-sized value): gradients per row differ
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0]) / comp.sum()
    assert_same(model, (plain() * weights).sum(), (ours * weights).sum())


def test_head_logps_by_hand():
    """One row, V = 3: log_softmax of x @ W.T + b at the target, its gradients by autograd."""
    x = torch.tensor([[1.0, -2.0]], requires_grad=True)
    head = torch.nn.Linear(2, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.5, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        head.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    logits = torch.tensor([0.6, -1.8, -0.7])  # by hand
    expected = logits[2] - torch.logsumexp(logits, 0)
    got = lm_loss.head_logps(x, head, torch.tensor([2]))
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    got.sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    F.log_softmax(head(x2), -1)[0, 2].backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-6)


def test_a_lora_wrapped_head_takes_the_plain_path(tiny_model):
    model = lora(tiny_model, modules_to_save=None)
    with hidden_states_as_logits(model) as head:
        assert head is not None  # peft's all-linear leaves the output head alone
    wrapped = lora(type(tiny_model)(tiny_model.config))
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(
        type(tiny_model)(tiny_model.config), LoraConfig(r=4, target_modules=["q_proj", "lm_head"], lora_dropout=0.0)
    )
    with hidden_states_as_logits(wrapped) as head:
        assert head is None
    batch = sft_batch(3)
    assert_same(wrapped, plain_sft(wrapped, batch), chunked_sft(wrapped, batch))


def test_packed_preference_layout_by_hand():
    from tunelab.methods.logprobs import packed_prompt_completion_batch

    # sequences of 5, 3 and 6 tokens into rows of 8: best fit decreasing puts 6 alone, then 5 + 3
    batch = packed_prompt_completion_batch([[1, 2], [3], [4, 5, 6]], [[7, 8, 9], [10, 11], [12, 13, 14]], 0, 8)
    assert batch["input_ids"].tolist() == [[4, 5, 6, 12, 13, 14, 0, 0], [1, 2, 7, 8, 9, 3, 10, 11]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 0, 1], [0, 1, 2, 3, 4, 0, 1, 2]]
    assert batch["completion_mask"].tolist() == [[0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0, 1, 1]]
    assert batch["sequence_index"].tolist() == [[2, 2, 2, 2, 2, 2, -1, -1], [0, 0, 0, 0, 0, 1, 1, 1]]


def test_packed_completion_logps_and_grads_equal_padded(tiny_model):
    """Padding-free DPO batches: the same per-sequence log-probs and gradients as right-padded ones."""
    from tunelab.methods.logprobs import packed_prompt_completion_batch, prompt_completion_batch

    model = lora(tiny_model)
    g = torch.Generator().manual_seed(4)
    lengths = [(3, 9), (6, 2), (2, 14), (5, 5), (4, 1), (7, 11)]
    prompts = [torch.randint(4, 500, (p,), generator=g).tolist() for p, _ in lengths]
    completions = [torch.randint(4, 500, (c,), generator=g).tolist() for _, c in lengths]
    padded = prompt_completion_batch(prompts, completions, 0)
    packed = packed_prompt_completion_batch(prompts, completions, 0, 20)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]  # fewer rows: less padding
    (a, n_a), (b, n_b) = completion_logps(model, padded), completion_logps(model, packed)
    assert n_a.tolist() == n_b.tolist() == [float(c) for _, c in lengths]
    weights = torch.tensor([1.0, -1.0, 2.0, 0.5, -0.5, 1.5]) / sum(c for _, c in lengths)
    assert_same(model, (a * weights).sum(), (b * weights).sum())


def test_packed_attention_mask_by_hand():
    # one row: examples of 2 and 3 tokens; a second row: one example of 5
    pos = torch.tensor([[0, 1, 0, 1, 2], [0, 1, 2, 3, 4]])
    mask = lm_loss.packed_attention_mask(pos, torch.float32)
    allowed = mask == 0
    assert mask.shape == (2, 1, 5, 5)
    expected0 = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(allowed[0, 0], expected0)
    assert torch.equal(allowed[1, 0], torch.ones(5, 5, dtype=torch.bool).tril())
    assert float(mask.min()) == torch.finfo(torch.float32).min


def test_packed_rows_save_one_mask_for_all_layers(tiny_model):
    from torch.autograd.graph import saved_tensors_hooks

    batch = sft_batch(packed=True)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    tiny_model.train()
    for p in tiny_model.parameters():
        p.requires_grad_(False)
    tiny_model.model.layers[0].self_attn.q_proj.weight.requires_grad_(True)  # something to differentiate
    masks = {}

    def pack(t):
        if t.ndim == 4 and t.shape[-2:] == (20, 20):
            masks[t.untyped_storage().data_ptr()] = t
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        next_token_logps(tiny_model, inputs, batch["labels"])
    assert len(masks) == 1  # shared by the 4 layers (the boolean mask became one float copy per layer)
    with saved_tensors_hooks(pack, lambda t: t):
        tiny_model(**inputs, use_cache=False)
    assert len(masks) == 1 + tiny_model.config.num_hidden_layers
