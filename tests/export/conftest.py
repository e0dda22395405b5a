"""Run folders for export tests, written in the training loop's layout without training.

A LoRA/DoRA adapter with random non-zero B (so the merge changes the weights) or a zero B
(so the run equals its base), saved with ``save_trained`` next to a ``config.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def make_run(root: Path, name: str, *, base: str = "tiny", adapter: str = "lora", zero: bool = False) -> Path:
    """Write ``root/name`` as a finished run of ``adapter`` on ``base`` (random B unless ``zero``)."""
    from transformers import AutoModelForCausalLM

    from tunelab.config import load_config, save_config
    from tunelab.models.adapters import attach_adapter
    from tunelab.models.load import load_tokenizer, save_trained
    from tunelab.models.resolve import resolve_model

    config = load_config(
        None,
        [f"model.name={base}", f"adapter.type={adapter}", "adapter.dropout=0.0", "adapter.r=4",
         "adapter.num_virtual_tokens=4", f"name={name}", f"output_dir={root}"],
    )
    path = resolve_model(base).path
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    peft_model = attach_adapter(model, config.adapter, str(path), gradient_checkpointing=False)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for pname, param in peft_model.named_parameters():
            if "lora_B" in pname:
                param.copy_(torch.zeros_like(param) if zero else torch.randn(param.shape, generator=generator) * 0.2)
    run = root / name
    save_trained(peft_model, load_tokenizer(path), run / "adapter", config.adapter.type)
    save_config(config, run / "config.yaml")
    return run


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory, tiny_path) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), "lora")


@pytest.fixture(scope="session")
def hf_export(lora_run, tmp_path_factory) -> Path:
    """``--format hf`` of ``lora_run`` (written once per session)."""
    from tunelab.export import export

    return export(lora_run, "hf", out=tmp_path_factory.mktemp("exports") / "hf").path


@pytest.fixture(scope="session")
def gguf_exports(lora_run, tmp_path_factory) -> dict[str, Path]:
    """GGUF files of ``lora_run`` for each quant (f16, q8_0, q4_0)."""
    from tunelab.export import export

    root = tmp_path_factory.mktemp("gguf")
    return {q: export(lora_run, "gguf", out=root / q, quant=q).path for q in ("f16", "q8_0", "q4_0")}
