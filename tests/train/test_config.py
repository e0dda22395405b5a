"""Config errors name every bad key at once, with the value and the valid choices."""

from __future__ import annotations

import pytest

from tunelab.cli.main import main
from tunelab.config import load_config
from tunelab.errors import ConfigError


def test_all_problems_listed_with_key_value_and_choices(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("adapter:\n  type: loraa\n  r: 0\ntraining:\n  lr_schedulr: cosine\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, ["training.optimizer=adam"])
    text = str(err.value)
    assert "4 problem(s)" in text
    assert "adapter.type: 'loraa'" in text and "'qlora'" in text
    assert "adapter.r: 0" in text
    assert "training.lr_schedulr: unknown key. did you mean 'lr_scheduler'?" in text
    assert "training.optimizer: 'adam'" in text and "'adamw_8bit'" in text


def test_overrides_are_typed_yaml_scalars():
    cfg = load_config(None, ["training.max_steps=7", "adapter.target_modules=[q_proj, v_proj]", "data.packing=false"])
    assert cfg.training.max_steps == 7 and cfg.adapter.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.packing is False


def test_qlora_implies_nf4_and_full_refuses_quantization():
    assert load_config(None, ["adapter.type=qlora"]).model.quantization == "nf4"
    with pytest.raises(ConfigError, match="cannot be quantized"):
        load_config(None, ["adapter.type=full", "model.quantization=nf4"])


def test_cli_prints_error_and_exits_2(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("training: [1, 2\n")
    assert main(["train", str(cfg)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
