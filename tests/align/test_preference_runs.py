"""DPO / SimPO / ORPO on tiny through the one loop; the reference shares the base weights."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch

from tests.align.conftest import tiny_config
from tunelab.errors import ConfigError
from tunelab.methods.logprobs import completion_logps


def _val_records(run_dir: str) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "val_accuracy" in r]


def _setup(tmp_path, pref_data, method="dpo", adapter=None, **method_args):
    from tunelab.methods import get_method
    from tunelab.models.load import load_model

    cfg = tiny_config(tmp_path, method, pref_data, method_args=method_args, adapter=adapter or {})
    model, tok = load_model(cfg.model, cfg.adapter, for_training=True, device="cpu")
    method_obj = get_method(method)(cfg, model, tok, tmp_path)
    return cfg, model, method_obj, method_obj.build_datasets()


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_direct_methods_raise_heldout_accuracy(tmp_path, pref_data, method):
    from tunelab.train.loop import train

    cfg = tiny_config(tmp_path, method, pref_data, training={"max_steps": 15, "eval_every": 5})
    result = train(cfg)
    val = _val_records(result.run_dir)
    first, last = val[0], val[-1]
    # Held-out pairs: the preferred phrasing starts less likely than the rejected one (orpo) or
    # tied with it (dpo: policy == reference at step 0 gives implicit rewards 0, accuracy 1/2).
    assert first["val_accuracy"] <= 0.5
    assert last["val_accuracy"] >= 0.95
    assert last["val_margin"] > first["val_margin"] + 0.05
    train_rows = [r for r in map(json.loads, (Path(result.run_dir) / "metrics.jsonl").read_text().splitlines())
                  if "loss" in r and "val_loss" not in r]
    expected = {"reward_chosen", "reward_rejected", "margin", "accuracy"}
    if method == "orpo":
        expected |= {"nll", "log_odds_ratio"}
        assert last["val_nll"] < first["val_nll"]  # ORPO is also SFT on the chosen answer
    assert expected <= set(train_rows[-1])


def test_reference_is_adapter_off_base(tmp_path, pref_data, tiny_model):
    cfg, model, dpo, data = _setup(tmp_path, pref_data)
    with torch.no_grad():  # make the adapter change the output
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    batch = dpo.collate(data.train[:4])
    model.eval()
    ref = dpo.reference.logps(model, batch)
    base = completion_logps(tiny_model.eval(), batch)[0].detach()
    policy = completion_logps(model, batch)[0].detach()
    torch.testing.assert_close(ref, base, rtol=0, atol=1e-5)
    assert (policy - base).abs().max() > 1e-2
    assert model.training is False  # reference_mode restores the mode it found


def _embedding_storages(shape: torch.Size) -> int:
    """Distinct storages among all live tensors shaped like the embedding matrix."""
    gc.collect()
    return len({o.untyped_storage().data_ptr() for o in gc.get_objects()
                if isinstance(o, torch.Tensor) and o.shape == shape})


def test_dpo_with_adapter_holds_one_copy_of_base(tmp_path, pref_data):
    cfg, model, dpo, data = _setup(tmp_path, pref_data)
    shape = model.get_base_model().get_input_embeddings().weight.shape
    loss, _ = dpo.loss(model, dpo.collate(data.train[:4]))
    loss.backward()
    assert dpo.reference.frozen is None
    assert _embedding_storages(shape) == 1
    # Contrast: full fine-tuning needs (and holds) a second, frozen copy.
    del model, dpo
    _, full_model, full_dpo, _ = _setup(tmp_path / "full", pref_data, adapter={"type": "full"})
    assert full_dpo.reference.frozen is not None
    assert _embedding_storages(shape) == 2


def test_precomputed_reference_matches_on_the_fly(tmp_path, pref_data):
    cfg, model, dpo, data = _setup(tmp_path, pref_data, precompute_reference=True)
    on_the_fly = dpo.loss(model, dpo.collate(data.validation[:6]))[0].item()
    dpo.before_training(model, data)
    batch = dpo.collate(data.validation[:6])
    assert "ref_logps" in batch and (tmp_path / "reference_logps.safetensors").is_file()
    assert dpo.loss(model, batch)[0].item() == pytest.approx(on_the_fly, abs=1e-5)


def test_bad_method_args_are_config_errors(tmp_path, pref_data):
    with pytest.raises(ConfigError, match="method_args.betta: unknown key"):
        _setup(tmp_path, pref_data, betta=0.1)
    with pytest.raises(ConfigError, match="Valid losses"):
        _setup(tmp_path, pref_data, loss="nope")
