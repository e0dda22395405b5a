"""Safe loading: pickle weights are refused by name unless the user opts in; no folder code runs.

A ``.bin`` file is a pickle and unpickling can run code, so a folder whose weights exist only as
``pytorch_model.bin`` / ``adapter_model.bin`` is refused with a message naming the file and
``--allow-pickle``; with the opt-in the same weights load (checked against the safetensors
originals). The checkpoint's training state (no pickle either) is tested in tests/train/test_state_io.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tunelab.cli.main import main
from tunelab.config import ModelArgs, RunConfig, save_config
from tunelab.errors import ModelError
from tunelab.models.load import load_model, load_run
from tunelab.models.safe_load import check_weights_folder, pickle_allowed, pickle_is_allowed

PROMPT = [1, 5, 9, 14, 3]


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([PROMPT])).logits


@pytest.fixture()
def bin_model(tiny_path, tiny_model, tmp_path) -> Path:
    """tiny's folder with its weights as ``pytorch_model.bin`` (a pickle) instead of safetensors."""
    folder = tmp_path / "bin-model"
    shutil.copytree(tiny_path, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(tiny_model.state_dict(), folder / "pytorch_model.bin")
    return folder


def test_bin_only_model_folder_is_refused_by_name(bin_model):
    with pytest.raises(ModelError) as err:
        load_model(ModelArgs(name=str(bin_model), dtype="fp32"), device="cpu")
    message = str(err.value)
    assert "pytorch_model.bin" in message and str(bin_model) in message
    assert "--allow-pickle" in message and "model.allow_pickle=true" in message
    assert "\n  fix: " in message


def test_allow_pickle_loads_the_same_weights(bin_model, tiny_model):
    expected = _logits(tiny_model)
    model, _ = load_model(ModelArgs(name=str(bin_model), dtype="fp32", allow_pickle=True), device="cpu")
    assert torch.equal(_logits(model), expected)
    with pickle_allowed():  # the command-wide opt-in (--allow-pickle) works the same way
        model, _ = load_model(ModelArgs(name=str(bin_model), dtype="fp32"), device="cpu")
    assert torch.equal(_logits(model), expected)
    assert not pickle_is_allowed()  # the opt-in ends with its block


def test_safetensors_win_over_a_pickle_beside_them(tiny_path, tiny_model, tmp_path):
    """A folder with both formats loads the safetensors (the pickle holds different weights)."""
    folder = tmp_path / "both"
    shutil.copytree(tiny_path, folder)
    poisoned = {k: torch.zeros_like(v) for k, v in tiny_model.state_dict().items()}
    torch.save(poisoned, folder / "pytorch_model.bin")
    assert check_weights_folder(folder, "model") is True
    model, _ = load_model(ModelArgs(name=str(folder), dtype="fp32"), device="cpu")
    assert torch.equal(_logits(model), _logits(tiny_model))


@pytest.fixture()
def bin_adapter_run(tiny_path, tiny_model, tmp_path) -> Path:
    """A finished LoRA run on tiny whose adapter is saved as ``adapter_model.bin`` only."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # B != 0: visible
    peft_model = get_peft_model(tiny_model, lora)
    run = tmp_path / "run"
    peft_model.save_pretrained(run / "adapter", safe_serialization=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_path / name, run / "adapter")
    save_config(RunConfig.model_validate({"model": {"name": "tiny", "dtype": "fp32"}}), run / "config.yaml")
    assert sorted(p.name for p in (run / "adapter").glob("adapter_model.*")) == ["adapter_model.bin"]
    return run


def test_bin_adapter_is_refused_and_loads_with_the_opt_in(bin_adapter_run):
    with pytest.raises(ModelError) as err:
        load_run(bin_adapter_run, device="cpu", dtype="fp32")
    assert "adapter_model.bin" in str(err.value) and "--allow-pickle" in str(err.value)
    with pickle_allowed():
        loaded = load_run(bin_adapter_run, device="cpu", dtype="fp32")
    base, _ = load_model(ModelArgs(name="tiny", dtype="fp32"), device="cpu")
    assert not torch.equal(_logits(loaded.model), _logits(base))  # the (non-zero) LoRA weights were loaded


def test_served_extra_adapter_as_bin_is_refused(bin_adapter_run):
    from tunelab.infer import load_engine

    with pytest.raises(ModelError, match="--adapter extra.*adapter_model.bin"):
        load_engine("tiny", {"extra": bin_adapter_run / "adapter"}, device="cpu")


def test_cli_refuses_then_loads_with_allow_pickle(bin_model, capsys):
    assert main(["chat", str(bin_model), "--prompt", "hi", "--max-new-tokens", "2", "--device", "cpu"]) == 2
    out = capsys.readouterr()
    assert "pytorch_model.bin" in out.out + out.err and "--allow-pickle" in out.out + out.err
    args = ["chat", str(bin_model), "--prompt", "hi", "--max-new-tokens", "2", "--temperature", "0", "--device", "cpu"]
    assert main([*args, "--allow-pickle"]) == 0


def test_folder_code_never_runs(tiny_path, tmp_path):
    """A folder whose config.json points at its own Python module (auto_map) loads transformers'
    own class for its model_type; the module, which would write a marker file, is never imported."""
    folder = tmp_path / "remote-code"
    shutil.copytree(tiny_path, folder)
    marker = tmp_path / "code-ran"
    (folder / "modeling_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaForCausalLM as EvilForCausalLM\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    model, _ = load_model(ModelArgs(name=str(folder), dtype="fp32"), device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and not marker.exists()
