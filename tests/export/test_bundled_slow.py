"""The bundled SmolLM2-135M (zero-initialised LoRA, so the run equals the base) round-trips through GGUF f16."""

from __future__ import annotations

import json

import pytest

from tests.export.conftest import make_run


@pytest.mark.slow
def test_bundled_model_gguf_f16_round_trip(tmp_path):
    from gguf import GGUFReader

    from tunelab.export import export
    from tunelab.export.verify import verify

    run = make_run(tmp_path, "smol", base="smollm2-135m-instruct", zero=True)
    result = export(run, "gguf", quant="f16")
    reader = GGUFReader(str(result.path))
    assert reader.fields["llama.attention.head_count_kv"].contents() == 3
    assert reader.fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    report = verify(run, [result.path], max_new_tokens=24)
    target = report.targets[0]
    # fp16 rounding of 135M weights: measured max |Δlogit| 0.041 on 30 layers; 4/4 greedy answers identical
    assert target.max_logit_diff < 0.2
    assert target.agreement >= 0.95, json.dumps([p.__dict__ for p in target.prompts], indent=1)
    assert (result.path.parent / "Modelfile").read_text().startswith(f"FROM ./{result.path.name}")
