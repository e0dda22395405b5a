"""Model FLOPs and MFU (issue 13, criterion 3): the count by hand on ``tiny``, and the MFU a run
logs against an injected precision probe and known token counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.train.flops import FlopsModel, mfu

# tiny: hidden 64, 4 layers, 4 query heads x 16, 2 kv heads, MLP 192, vocab 512, tied LM head.
PER_LAYER = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 192  # q, k, v, o, gate, up, down
LM_HEAD = 64 * 512
BASE = 4 * PER_LAYER + LM_HEAD  # 229,376: the embedding lookup is no matmul
LORA_R8 = 4 * 8 * (2 * (64 + 64) + 2 * (64 + 32) + 3 * (64 + 192))  # r x (in + out) per adapted linear


def lora_tiny(tiny_model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(tiny_model, LoraConfig(r=8, target_modules="all-linear"))


def test_counts_of_tiny_by_hand(tiny_model):
    full = FlopsModel.of(tiny_model)
    assert (full.matmul_params, full.trained_params, full.layers, full.attention_width) == (BASE, BASE, 4, 64)
    lora = FlopsModel.of(lora_tiny(tiny_model))
    assert (lora.matmul_params, lora.trained_params) == (BASE + LORA_R8, LORA_R8)


def test_step_flops_full_is_6n_per_token_plus_attention():
    fm = FlopsModel(matmul_params=1000, trained_params=1000, layers=2, attention_width=8)
    # two examples of 3 and 5 tokens: 6 N T + 12 L HQ (3^2 + 5^2)
    assert fm.step_flops([3, 5]) == 6 * 1000 * 8 + 12 * 2 * 8 * (9 + 25)
    # packing changes only the attention term: one 8-token example would cost 64 instead of 34
    assert fm.step_flops([8]) - fm.step_flops([3, 5]) == 12 * 2 * 8 * (64 - 34)


def test_step_flops_frozen_base_and_reference_forward():
    fm = FlopsModel(matmul_params=1000, trained_params=10, layers=2, attention_width=8)
    # forward 2N + activation grads 2N + weight grads 2 N_t, per token
    assert fm.step_flops([4]) == (4 * 1000 + 2 * 10) * 4 + 12 * 2 * 8 * 16
    # a reference forward on the same example: 2 N T + 4 L HQ s^2
    assert fm.step_flops([4], [4]) - fm.step_flops([4]) == 2 * 1000 * 4 + 4 * 2 * 8 * 16


def test_mfu_is_flops_per_second_over_the_peak():
    assert mfu(50e9, 2.0, 100.0) == pytest.approx(0.25)
    assert mfu(1.0, 1.0, 0.0) == 0.0  # unknown peak


@pytest.fixture()
def same_length_file(tmp_path):
    """12 identical rows: every example tokenizes to the same length."""
    path = tmp_path / "same.jsonl"
    row = {"instruction": "What color is the cat?", "input": "", "output": "The cat is red."}
    path.write_text("".join(json.dumps(row) + "\n" for _ in range(12)))
    return path


def test_logged_mfu_matches_the_hand_count(make_config, same_length_file, tiny_tokenizer, monkeypatch):
    """metrics.jsonl's mfu = hand FLOPs x (steps/s) / injected peak; steps/s from the logged
    tokens/s and the known tokens per step (4 examples of s tokens, no packing)."""
    from tunelab.data import prepare
    from tunelab.train.loop import train

    monkeypatch.setenv("TUNELAB_PRECISION_PROBE", '{"fp32": 250.0, "bf16": 10.0}')
    config = make_config(
        f"data.path={same_length_file}",
        "data.packing=false",
        "data.validation_split=0",
        "adapter.r=8",
        "training.max_steps=3",
        "training.micro_batch_size=2",
        "training.gradient_accumulation=2",
        "training.eval_every=0",
    )
    rows = prepare(config.data, tiny_tokenizer, packing=False).train
    lengths = {len(r.input_ids) for r in rows}
    assert len(lengths) == 1
    s = lengths.pop()
    result = train(config)
    records = [r for r in map(json.loads, Path(result.run_dir, "metrics.jsonl").read_text().splitlines()) if "mfu" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    flops = (4 * (BASE + LORA_R8) + 2 * LORA_R8) * 4 * s + 12 * 4 * 64 * 4 * s * s
    for r in records:
        seconds = 4 * s / r["tokens_per_s"]  # tokens/s counts the 4 x s non-padding tokens
        assert r["mfu"] == pytest.approx(flops / seconds / 250e9, rel=1e-9)
        assert 0 < r["mfu"] < 1


def test_a_peak_below_the_achieved_rate_logs_no_mfu_and_says_why(make_config, same_length_file, capfd, monkeypatch):
    """A probe cached while the machine was busy gives a peak below what a step achieves: the run
    must not log MFU above 100%; it warns once and logs null instead."""
    from tunelab.train.loop import train

    monkeypatch.setenv("TUNELAB_PRECISION_PROBE", '{"fp32": 1e-6, "bf16": 1e-7}')  # 1 kFLOP/s: any step beats it
    config = make_config(
        f"data.path={same_length_file}",
        "data.validation_split=0",
        "training.max_steps=2",
        "training.eval_every=0",
    )
    result = train(config)
    records = [r for r in map(json.loads, Path(result.run_dir, "metrics.jsonl").read_text().splitlines()) if "mfu" in r]
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["mfu"] is None for r in records)
    captured = capfd.readouterr()
    out = captured.out + captured.err
    assert out.count("warning: MFU not reported") == 1
    assert "fix: delete" in out


def test_a_run_that_beats_a_cached_peak_flags_the_probe_for_the_next_run(
    make_config, same_length_file, capfd, monkeypatch, tmp_path
):
    from tunelab.models import precision
    from tunelab.train.loop import train

    monkeypatch.delenv("TUNELAB_PRECISION_PROBE", raising=False)
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(precision, "_MEMO", {})
    monkeypatch.setattr(precision, "measure", lambda device, budget_s=precision.BUDGET_S: {"fp32": 1e-6})
    config = make_config(f"data.path={same_length_file}", "data.validation_split=0", "training.max_steps=1")
    train(config)
    out = "".join(capfd.readouterr())
    assert "fix: the next run measures the peak again (the cached probe is flagged)" in out
    (cache,) = (tmp_path / "home" / "precision").glob("*.json")
    assert json.loads(cache.read_text())["stale"] is True
