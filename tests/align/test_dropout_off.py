"""Alignment log-prob passes run without dropout, even with adapter dropout 0.5: PPO's old
(rollout) and new (loss) log-probs of the same sequences are equal before any update, so the
first ratio is exactly 1; the DPO/KTO reference pass is the deterministic adapter-off base."""

from __future__ import annotations

import random

import pytest
import torch

from tests.align.conftest import tiny_config, write_jsonl
from tunelab.methods.logprobs import completion_logps
from tunelab.train.sampler import ResumableSampler


@pytest.fixture()
def prompts(tmp_path):
    rng = random.Random(0)
    rows = [{"prompt": f"Say {rng.choice(['cats', 'rain', 'maps'])} number {i}."} for i in range(12)]
    return write_jsonl(tmp_path / "p.jsonl", rows[:8]), write_jsonl(tmp_path / "pv.jsonl", rows[8:])


def _method(cfg, run_dir):
    """The method on a LoRA model whose B matrices are non-zero (at init B = 0, so LoRA dropout
    would change nothing and the test could not see it)."""
    from tunelab.methods import get_method
    from tunelab.models.load import load_model

    model, tok = load_model(cfg.model, cfg.adapter, for_training=True, device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model, get_method(cfg.method)(cfg, model, tok, run_dir)


def _dropout_is_live(model, batch) -> bool:
    model.train()
    with torch.no_grad():
        return not torch.equal(completion_logps(model, batch)[0], completion_logps(model, batch)[0])


def test_ppo_first_ratio_is_exactly_one_with_dropout(tmp_path, prompts, monkeypatch):
    import tunelab.methods.ppo as ppo_module

    cfg = tiny_config(
        tmp_path, "ppo", prompts, adapter={"dropout": 0.5},
        method_args={"reward_function": "concise", "rollout_batch_size": 8, "ppo_epochs": 1, "max_new_tokens": 6},
        training={"micro_batch_size": 4},
    )
    model, ppo = _method(cfg, tmp_path)
    data = ppo.build_datasets()
    ppo.before_training(model, data)
    torch.manual_seed(0)
    model.train()
    batches = ppo.next_micro_batches(model, 0, ResumableSampler(len(data.train), 0))
    seen = {}
    real = ppo_module.clipped_policy_loss

    def capture(logps, old_logps, adv, mask, cliprange):
        seen["new"], seen["old"] = logps.detach(), old_logps
        return real(logps, old_logps, adv, mask, cliprange)

    monkeypatch.setattr(ppo_module, "clipped_policy_loss", capture)
    assert model.training
    loss, metrics = ppo.loss(model, batches[0])
    loss.backward()  # the dropout-free pass still trains the adapter
    assert torch.equal(seen["new"], seen["old"])
    assert metrics["approx_kl"] == 0.0 and metrics["clip_frac"] == 0.0
    assert model.training and all(m.training for m in model.modules())  # the mode it found is restored
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    probe = {"input_ids": batches[0]["seq"], "attention_mask": batches[0]["attn"],
             "completion_mask": torch.ones_like(batches[0]["attn"])}
    assert _dropout_is_live(model, probe)  # adapter dropout 0.5 is really on in train mode


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_reference_pass_is_dropout_free(tmp_path, method, tiny_model):
    from tests.align.conftest import preference_rows, unpaired_rows

    rows = preference_rows(12, 1) if method == "dpo" else unpaired_rows(12, 1)
    data = write_jsonl(tmp_path / "d.jsonl", rows[:8]), write_jsonl(tmp_path / "v.jsonl", rows[8:])
    cfg = tiny_config(tmp_path, method, data, adapter={"dropout": 0.5}, training={"micro_batch_size": 4})
    model, m = _method(cfg, tmp_path)
    batch = m.collate(list(m.build_datasets().train[:4]))
    assert _dropout_is_live(model, batch)
    model.train()
    first, second = m.reference.logps(model, batch), m.reference.logps(model, batch)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, completion_logps(tiny_model.eval(), batch)[0].detach(), rtol=0, atol=1e-5)
    assert model.training
