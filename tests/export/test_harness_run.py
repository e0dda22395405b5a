"""A run (base + unmerged LoRA adapter) through the lm-eval bridge equals lm-eval's hf backend on its merged export."""

from __future__ import annotations

import pytest

pytest.importorskip("lm_eval")


def test_a_run_scores_and_generates_like_its_merged_export_under_hf(lora_run, hf_export):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from tunelab.evaluate.harness import TunelabLM
    from tunelab.presets.evaltasks.task_data import _rows

    rows = _rows("multiple_choice.jsonl")[:4]
    scored = [
        Instance("loglikelihood", {}, (f"Question: {r['question']}\nAnswer:", f" {c}"), i)
        for i, r in enumerate(rows)
        for c in r["choices"]
    ]
    until = {"until": ["\n"], "do_sample": False, "max_gen_toks": 12}
    generated = [
        Instance("generate_until", {}, (f"Question: {r['question']}\nAnswer:", dict(until)), i)
        for i, r in enumerate(rows)
    ]
    ours = TunelabLM(str(lora_run), dtype="fp32", device="cpu", batch_size=4)
    assert hasattr(ours.model, "peft_config")  # the adapter is applied, not merged
    hf = HFLM(pretrained=str(hf_export), dtype="float32", device="cpu", batch_size=4)
    for (a, greedy_a), (b, greedy_b) in zip(ours.loglikelihood(scored), hf.loglikelihood(scored), strict=True):
        assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b
    assert ours.generate_until(generated) == hf.generate_until(generated)
