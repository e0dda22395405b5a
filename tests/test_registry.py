"""One Registry type: lazy entries, refused duplicates, helpful unknown names; the name tables agree."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from tunelab.errors import ConfigError
from tunelab.registry import DuplicateNameError, Registry


def test_lazy_entry_is_imported_on_first_get_only():
    reg: Registry = Registry("thing", key="x.thing")
    calls = []

    def loader():
        calls.append(1)
        return "loaded"

    reg.lazy("a", loader)
    reg.lazy("b", "os.path:join")
    assert calls == [] and reg.names() == ["a", "b"] and "a" in reg
    assert reg.get("a") == "loaded" and reg.get("a") == "loaded"
    assert calls == [1]  # resolved once, then cached
    import os.path

    assert reg["b"] is os.path.join


def test_duplicates_are_refused_names_and_aliases():
    reg: Registry = Registry("optimizer")
    reg.register("adamw", 1, aliases=("adam",))
    for name in ("adamw", "adam"):
        with pytest.raises(DuplicateNameError, match=f"optimizer '{name}' is already registered"):
            reg.register(name, 2)
    with pytest.raises(DuplicateNameError):
        reg.lazy("sgd", "os:sep", aliases=("adam",))
    assert reg.get("adamw") == 1 and "sgd" not in reg.names()


def test_decorator_form_and_aliases():
    reg: Registry = Registry("loss")

    @reg.register("sigmoid", aliases=("dpo",))
    def sigmoid():
        return 3

    assert sigmoid() == 3 and reg.get("dpo") is sigmoid and reg.canonical("dpo") == "sigmoid"
    assert list(reg) == ["sigmoid"] and len(reg) == 1 and "dpo" in reg


def test_unknown_name_lists_valid_and_suggests_closest():
    reg: Registry = Registry("optimizer", key="training.optimizer")
    for name in ("adamw", "adamw_8bit", "sgd"):
        reg.register(name, name)
    with pytest.raises(ConfigError) as err:
        reg.get("adamw8bit")
    text = str(err.value)
    assert text.startswith("training.optimizer: unknown optimizer 'adamw8bit'. Did you mean 'adamw_8bit'")
    assert "Valid: adamw, adamw_8bit, sgd" in text and "\n  fix: use 'adamw_8bit'" in text
    with pytest.raises(ConfigError, match=r"Valid: adamw, adamw_8bit, sgd\n  fix: use one of"):
        reg.get("zzz")
    assert "none registered" in str(Registry("guardrail").unknown("x"))


def _literal(annotation) -> list[str]:
    """Choices of a Literal annotation, or of the Literal inside ``list[Literal[...]]``."""
    return list(typing.get_args(annotation))


def test_adapter_names_agree_config_loop_planner():
    from tunelab.config import AdapterArgs
    from tunelab.memory.trainable import ADAPTERS as PLANNER
    from tunelab.models.adapters import ADAPTERS, PEFT_TYPES

    config = _literal(AdapterArgs.model_fields["type"].annotation)
    assert config == ADAPTERS.names() == PLANNER.names()
    assert PEFT_TYPES == set(config) - {"freeze", "full"}


def test_optimizer_names_agree_config_loop_planner():
    from tunelab.config import TrainArgs
    from tunelab.memory.optimizers import OPTIMIZERS as PLANNER
    from tunelab.train.optim import OPTIMIZERS, SCHEDULES

    config = _literal(TrainArgs.model_fields["optimizer"].annotation)
    assert sorted(config) == sorted(OPTIMIZERS.names()) == sorted(PLANNER.names())
    assert _literal(TrainArgs.model_fields["lr_scheduler"].annotation) == SCHEDULES.names()


def test_method_names_agree_config_loop_args_planner():
    """The loop, its method_args schemas, the config and the planner accept the same methods;
    the planner takes ``ipo`` as an alias of dpo (it is dpo's ``loss: ipo``)."""
    from tunelab.config import load_config
    from tunelab.memory.training import METHODS as PLANNER
    from tunelab.methods import METHODS
    from tunelab.methods.args import METHOD_ARGS

    assert METHODS.names() == METHOD_ARGS.names() == ["sft", "dpo", "simpo", "orpo", "kto", "reward", "ppo", "distill"]
    for name in METHODS:
        assert name in PLANNER
        args = {"ppo": {"reward_function": "answer_format"}, "distill": {"teacher": "tiny"}}.get(name, {})
        assert load_config(None, [f"method={name}"], base={"method_args": args}).method == name
    assert set(PLANNER.names()) == set(METHODS.names())
    assert PLANNER.aliases() == {"ipo": "dpo"}
    with pytest.raises(ConfigError, match="did you mean 'dpo'"):
        load_config(None, ["method=dpoo"])


def test_pair_loss_names_and_reference_flags_agree():
    from tunelab.methods.args import PAIR_LOSSES
    from tunelab.methods.losses import LOSSES

    assert {name: LOSSES.get(name).needs_reference for name in LOSSES} == PAIR_LOSSES


def test_builtin_models_registry_and_unknown_model_hint():
    from tunelab.errors import ModelError
    from tunelab.models.resolve import BUILTIN_MODELS, resolve_model

    assert BUILTIN_MODELS.names() == ["tiny", "smollm2-135m-instruct"]
    assert BUILTIN_MODELS.canonical("default") == BUILTIN_MODELS.canonical("smollm2") == "smollm2-135m-instruct"
    assert resolve_model("TINY").kind == "tiny"
    with pytest.raises(ModelError, match=r"unknown model 'smolm2'. Did you mean 'smollm2'\? .*\(tiny, smollm2-135m"):
        resolve_model("smolm2")


def test_reward_functions_refuse_duplicates_and_suggest():
    from tunelab.methods.reward_functions import get_reward_function, register_reward_function

    with pytest.raises(DuplicateNameError, match="reward function 'concise' is already registered"):
        register_reward_function("concise")(lambda prompt, completion: 0.0)
    assert get_reward_function("concise")("p", "") == 1.0
    with pytest.raises(ConfigError, match="method_args.reward_function: unknown reward function 'consice'. Did you"):
        get_reward_function("consice")


def test_every_loop_method_class_resolves_with_its_name():
    from tunelab.methods import METHODS

    for name in METHODS:
        assert METHODS.get(name).name == name


def test_guardrails_refuse_duplicates_and_unknown_names():
    from tunelab.serve.guardrails import ALLOW, GUARDRAILS, build_guardrails, register_guardrail

    class Open:
        name = "test-open"

        def check_input(self, text):
            return ALLOW

        def check_output(self, text):
            return ALLOW

    if "test-open" not in GUARDRAILS:
        register_guardrail("test-open", Open)
    with pytest.raises(DuplicateNameError):
        register_guardrail("test-open", Open)
    assert [g.name for g in build_guardrails(["test-open"])] == ["test-open"]
    with pytest.raises(ConfigError, match="--guardrail: unknown guardrail 'test-opne'. Did you mean 'test-open'"):
        build_guardrails(["test-open", "test-opne"])


def test_registries_import_without_torch():
    code = (
        "import sys, tunelab.methods, tunelab.methods.args, tunelab.registry, tunelab.memory.training, "
        "tunelab.memory.optimizers, tunelab.memory.trainable, tunelab.config\n"
        "from tunelab.methods import METHODS\n"
        "assert METHODS.names()\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_registers_each_subcommand_once_however_often_main_runs(capsys):
    """``main()`` is called many times in one process (tests, notebooks): the command table must not
    grow with each call (it did: every call appended every subcommand again, and later calls slowed)."""
    from tunelab.cli.main import app, main

    main(["plan", "--help"])
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    main(["plan", "--help"])
    main(["config", "--help"])
    capsys.readouterr()
    again = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert again == names and len(names) == len(set(names)) and "plan" in names and "draft" in names
