"""bitsandbytes folders: NF4 and int8 reload bit-exactly and generate (bitsandbytes 0.50 runs both on CPU)."""

from __future__ import annotations

import json

import pytest
import torch

IDS = torch.tensor([[1, 5, 9, 100, 200, 300, 2, 7]])


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_bnb_folder_reloads_and_generates(lora_run, hf_export, tmp_path, kind):
    from transformers import AutoModelForCausalLM

    from tunelab.export import export
    from tunelab.export.bnb import quantize_folder

    out = export(lora_run, f"bnb-{kind}", out=tmp_path / kind).path
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["load_in_4bit" if kind == "nf4" else "load_in_8bit"] is True
    reloaded = AutoModelForCausalLM.from_pretrained(out, device_map={"": "cpu"})
    layer = type(reloaded.model.layers[0].mlp.up_proj).__name__
    assert layer == {"nf4": "Linear4bit", "int8": "Linear8bitLt"}[kind]
    # the same merged weights quantized in memory compute exactly what the reloaded folder computes
    fresh = quantize_folder(hf_export, tmp_path / "again", kind)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=IDS).logits, fresh(input_ids=IDS).logits)
        merged = AutoModelForCausalLM.from_pretrained(hf_export, dtype=torch.float32)(input_ids=IDS).logits
        err = (reloaded(input_ids=IDS).logits - merged).abs().max()
    assert 0 < err < 1.0  # quantized (not a copy), yet close to the merged model
    out_ids = reloaded.generate(input_ids=IDS, attention_mask=torch.ones_like(IDS), do_sample=False,
                                max_new_tokens=5, pad_token_id=3)
    assert out_ids.shape[1] > IDS.shape[1]
