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


def test_method_args_typo_fails_at_load_with_key_path_and_valid_keys(tmp_path):
    """Before: method_args was a free dict, checked only by the method after the weights loaded."""
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text("method: dpo\nmethod_args:\n  betta: 0.2\n  loss: sigmod\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, ["training.max_steps=0"])
    text = str(err.value)
    assert "3 problem(s)" in text  # the method_args problems are listed with the others, at once
    assert "training.max_steps: 0" in text
    assert "method_args.betta: unknown key. did you mean 'beta'? valid keys here: loss, beta," in text
    assert "method_args.loss: 'sigmod' — unknown loss 'sigmod'. Valid losses: sigmoid, ipo," in text
    assert text.endswith("fix: see `tunelab config explain method_args.dpo` for every field and its meaning")
    with pytest.raises(ConfigError, match="method_args: set exactly one of reward_model"):
        load_config(None, ["method=ppo"])  # a required choice, checked although nothing was written
    with pytest.raises(ConfigError, match="method_args.beta: unknown key. valid keys here: none"):
        load_config(None, ["method_args.beta=0.1"])  # sft has no options
    assert load_config(None, ["method=orpo", "method_args.beta=0.2"]).method_args == {"beta": 0.2}


def test_method_defaults_follow_the_method():
    from tunelab.methods.args import parse_method_args

    assert parse_method_args("dpo", {}).loss == "sigmoid"
    assert parse_method_args("simpo", {}).loss == "simpo" and parse_method_args("orpo", {}).loss == "orpo"


def test_import_config_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys\nfrom tunelab.config import load_config\n"
        "load_config(None, ['method=dpo', 'method_args.beta=0.3'])\n"
        "from tunelab.config_doc import explain\nexplain('method_args')\n"
        "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')], 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_preflight_reference_comes_from_the_methods_typed_args():
    """Before: preflight read method_args['reference'], a key every schema rejects, so a DPO run
    with a reference-free loss (simpo) on a full fine-tune was planned with a second model copy."""
    from tunelab.memory.preflight import spec_from_config
    from tunelab.memory.training import plan_training

    def ref(*overrides):
        spec = spec_from_config(load_config(None, ["model.name=tiny", "adapter.type=full", *overrides]))
        return spec.reference, plan_training(spec)

    (with_ref, plan_ref), (free, plan_free) = ref("method=dpo"), ref("method=dpo", "method_args.loss=simpo")
    assert (with_ref, free) == ("adapter", "none")
    assert ref("method=kto")[0] == "adapter" and ref("method=sft")[0] == "none" and ref("method=orpo")[0] == "none"
    from tunelab.memory.arch import count_parameters

    arch = spec_from_config(load_config(None, ["model.name=tiny"])).arch
    # the second copy is the whole fp32 model: the plans differ by exactly its bytes
    assert plan_ref.total - plan_free.total == count_parameters(arch).total * 4
