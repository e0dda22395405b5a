"""A checkpoint that does not fit its model is reported by tensor name, though transformers'
own logging stays silenced (tunelab.utils.quiet)."""

from __future__ import annotations

import shutil

import pytest

from tunelab.config import ModelArgs


def broken_tiny(tmp_path, tiny_path, edit):
    """A copy of tiny whose safetensors file was changed by ``edit(tensors)``."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "broken"
    shutil.copytree(tiny_path, folder)
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def warnings_of(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]


def load(folder):
    from tunelab.models.load import load_model

    return load_model(ModelArgs(name=str(folder), dtype="fp32"), device="cpu")


def test_renamed_tensor_is_named_as_unused_and_newly_initialized(tmp_path, tiny_path, capsys):
    folder = broken_tiny(tmp_path, tiny_path, lambda t: t.__setitem__("model.nrm.weight", t.pop("model.norm.weight")))
    model, _ = load(folder)
    assert warnings_of(capsys) == [
        f"warning: LlamaForCausalLM from {folder}: model.nrm.weight in the checkpoint but not used by the model",
        f"warning: LlamaForCausalLM from {folder}: model.norm.weight missing from the checkpoint, newly initialized "
        "(random)",
    ]
    assert model.model.norm.weight.shape == (64,)  # it is there, just not the trained one


def test_size_mismatch_is_named_with_both_shapes(tmp_path, tiny_path, capsys):
    import torch

    folder = broken_tiny(tmp_path, tiny_path, lambda t: t.__setitem__("model.norm.weight", torch.ones(32)))
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        load(folder)
    assert warnings_of(capsys) == [
        f"warning: LlamaForCausalLM from {folder}: model.norm.weight has the wrong shape in the checkpoint, newly "
        "initialized (random) (Reinit due to size mismatch - ckpt: torch.Size([32]) vs model:torch.Size([64]))"
    ]


def test_a_checkpoint_that_fits_loads_without_a_warning(tiny_path, capsys):
    load(tiny_path)
    assert warnings_of(capsys) == []
