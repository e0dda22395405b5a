"""--format hf / adapter: the merged folder computes what base + adapter computes; unmergeable adapters are refused."""

from __future__ import annotations

import json

import pytest
import torch

from tests.export.conftest import make_run

IDS = torch.tensor([[1, 5, 9, 100, 200, 300, 2, 7, 42, 77]])


def _run_logits(run):
    from tunelab.models.load import load_run

    loaded = load_run(run, device="cpu", dtype="fp32", as_trained=True)  # NF4 layers: fp32 compute, as trained
    assert hasattr(loaded.model, "peft_config")  # really base + unmerged adapter
    with torch.no_grad():
        return loaded.model(input_ids=IDS).logits


def _folder_logits(folder):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_merged_folder_equals_base_plus_adapter(lora_run, hf_export, tiny_path):
    merged, run = _folder_logits(hf_export), _run_logits(lora_run)
    assert torch.allclose(merged, run, atol=1e-5, rtol=0)
    # the adapter is not a no-op: the merge changed the model
    assert (merged - _folder_logits(tiny_path)).abs().max() > 1e-2


def test_merged_folder_is_plain_transformers(hf_export):
    config = json.loads((hf_export / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "auto_map" not in config
    assert "quantization_config" not in config
    assert (hf_export / "model.safetensors").is_file() and not list(hf_export.glob("*.bin"))
    assert not (hf_export / "adapter_config.json").exists()
    generation = json.loads((hf_export / "generation_config.json").read_text())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_export)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = generation["eos_token_id"]
    assert im_end in (eos if isinstance(eos, list) else [eos])
    assert (hf_export / "chat_template.jinja").read_text().strip() == tokenizer.chat_template.strip()


def test_dora_merge_equals_adapter(tmp_path, tiny_path):
    from tunelab.export import export

    run = make_run(tmp_path, "dora", adapter="dora")
    out = export(run, "hf", out=tmp_path / "hf").path
    assert torch.allclose(_folder_logits(out), _run_logits(run), atol=1e-5, rtol=0)


def test_eos_ids_include_turn_terminator_when_eos_differs(tiny_tokenizer):
    """A tokenizer whose EOS is <|endoftext|> still stops on the template's <|im_end|>."""
    from transformers import GenerationConfig

    from tunelab.models.merge import eos_token_ids

    tokenizer = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    tokenizer.eos_token = "<|endoftext|>"
    ids = eos_token_ids(tokenizer, GenerationConfig(eos_token_id=0))
    assert ids == [0, tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_prompt_tuning_run_refuses_hf(tmp_path, tiny_path, capsys):
    from tunelab.cli.main import main
    from tunelab.errors import ConfigError
    from tunelab.export import export

    run = make_run(tmp_path, "pt", adapter="prompt_tuning")
    with pytest.raises(ConfigError, match="prompt_tuning cannot be merged") as err:
        export(run, "hf", out=tmp_path / "hf")
    assert "--format adapter" in str(err.value) and "tunelab serve" in str(err.value)
    assert "tunelab chat" in str(err.value)
    assert main(["export", str(run), "--format", "gguf"]) == 2
    assert "cannot be merged" in capsys.readouterr().err
    copied = export(run, "adapter", out=tmp_path / "adapter").path
    assert json.loads((copied / "adapter_config.json").read_text())["peft_type"] == "PROMPT_TUNING"


def test_qlora_merges_into_the_dequantized_nf4_base(tmp_path, tiny_path):
    """A QLoRA adapter was trained against dequant(NF4(W)), so the merge is W' = dequant(NF4(W)) + (α/r)·B·A.

    Merging into the original W would add the rounding error NF4(W) − W back to every layer.
    """
    import bitsandbytes.functional as bnbf
    from safetensors.torch import load_file

    from tunelab.export import export

    run = make_run(tmp_path, "qlora", adapter="qlora")
    out = export(run, "hf", out=tmp_path / "hf").path
    merged = load_file(out / "model.safetensors")
    base = load_file(tiny_path / "model.safetensors")
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    name = "model.layers.0.self_attn.q_proj"
    w = base[f"{name}.weight"]
    packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    dequantized = bnbf.dequantize_4bit(packed, state)
    a = adapter[f"base_model.model.{name}.lora_A.weight"]
    b = adapter[f"base_model.model.{name}.lora_B.weight"]
    expected = dequantized + (config["lora_alpha"] / config["r"]) * b @ a
    assert torch.allclose(merged[f"{name}.weight"], expected, atol=1e-6, rtol=0)
    assert (dequantized - w).abs().max() > 1e-3  # the NF4 rounding is really there
    # and the folder computes what the trained run (NF4 base + adapter, fp32 compute) computes
    assert torch.allclose(_folder_logits(out), _run_logits(run), atol=1e-4, rtol=0)
