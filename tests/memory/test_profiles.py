"""`tunelab plan --profile` and the mechanism flags: each flag changes the plan by exactly its modelled
term (by hand, on Llama-2-7B's shapes), a profile is the flags it stands for, tunelab's own profile is
the default, and the CLI gives the published comparison's numbers (bench/memory_published.py)."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path

import pytest

from tunelab.cli.main import main
from tunelab.cli.plan_cmd import flags_from_argv
from tunelab.errors import ConfigError
from tunelab.memory import GIB
from tunelab.memory.plan_request import PlanFlags, make_plan
from tunelab.memory.profiles import DEFAULT_PROFILE, PROFILES, find_profile, help_text

H, FFN, L, V = 4096, 11008, 32, 32000
B, T = 2, 512
N = B * T
LORA_QV = 2 * L * 8 * (H + H)  # r = 8 on q_proj and v_proj (4096 -> 4096) in 32 layers
BASE = ["--model", "llama-2-7b", "--batch-size", str(B), "--seq-len", str(T), "--overhead-gib", "0"]
QV = ["--adapter", "lora", "--lora-r", "8", "--target-modules", "q_proj,v_proj", "--lora-dropout", "0"]


def plan(*args: str):
    return make_plan(flags_from_argv([*BASE, *args]))


def test_chunked_loss_flag_removes_the_fp32_logits_term():
    full, chunked = plan(*QV, "--no-recomputed-loss"), plan(*QV, "--no-recomputed-loss", "--chunked-loss")
    assert full.estimate.logits == N * V * 12  # 16-bit logits + fp32 copy + log-softmax + its gradient
    assert chunked.estimate.logits == N * V * 2  # the 16-bit logits only
    assert full.estimate.total - chunked.estimate.total == N * V * 10


def test_recomputed_loss_keeps_hidden_rows_lse_and_one_chunk():
    from tunelab.memory.activations import LOSS_CHUNK_ELEMENTS
    from tunelab.methods.lm_loss import CHUNK_ELEMENTS

    assert LOSS_CHUNK_ELEMENTS == CHUNK_ELEMENTS  # the planner models the loss the methods run
    full = plan(*QV, "--no-recomputed-loss")
    recomputed = plan(*QV)  # tunelab's default profile
    # 16-bit hidden rows + fp32 log-sum-exp per token; one chunk: 16-bit logits, fp32 copy and gradient
    assert recomputed.estimate.logits == N * (2 * H + 4) + min(N * V, CHUNK_ELEMENTS) * (2 + 8)
    long = plan(*QV, "--seq-len", "4096")  # 8192 tokens x 32000 logits: more than one chunk, the chunk is the cap
    assert long.estimate.logits == 8 * N * (2 * H + 4) + CHUNK_ELEMENTS * (2 + 8)
    assert full.estimate.logits == N * V * 12
    assert plan(*QV, "--profile", "transformers-peft").spec.loss == "full"  # ForCausalLMLoss upcasts all logits


def test_adapter_dtype_flag_halves_adapter_gradient_and_moments():
    fp32, bf16 = plan(*QV), plan(*QV, "--adapter-dtype", "bf16")
    assert fp32.estimate.trainable == LORA_QV == 4_194_304
    assert fp32.estimate.adapter - bf16.estimate.adapter == LORA_QV * 2
    assert fp32.estimate.gradients - bf16.estimate.gradients == LORA_QV * 2
    assert fp32.estimate.optimizer - bf16.estimate.optimizer == 2 * LORA_QV * 2  # two Adam moments
    # per layer, fp32 adapters keep peft's fp32 cast of the attention input for q and v (2 · 4h) and
    # fp32 A·x (2 · 4r); bf16 adapters keep the bf16 input itself once (2h) and bf16 A·x (2 · 2r)
    r = 8
    activations = N * L * ((2 * 4 * H + 2 * 4 * r) - (2 * H + 2 * 2 * r))
    assert fp32.estimate.activations - bf16.estimate.activations == activations
    # the gradients are written while activations are freed (overlap): 6 B/param, not 8
    assert fp32.estimate.total - bf16.estimate.total == LORA_QV * 6 + activations


def test_optimizer_in_backward_and_offload_flags():
    full = ["--adapter", "full", "--precision", "bf16"]
    assert plan(*full).estimate.gradients == 6_738_415_616 * 2
    assert plan(*full, "--optimizer-in-backward").estimate.gradients == V * H * 2  # one tensor at a time
    ckpt = [*QV, "--precision", "bf16", "--gradient-checkpointing"]
    kept, offloaded = plan(*ckpt), plan(*ckpt, "--offload-activations")
    assert offloaded.estimate.cpu_offload == N * L * 2 * H  # bf16 block inputs in CPU RAM
    assert kept.estimate.activations - offloaded.estimate.activations == N * L * 2 * H


def test_quantized_head_flag_stores_the_head_in_nf4():
    qlora = ["--profile", "litgpt", "--adapter", "qlora", "--lora-r", "8", "--target-modules", "q_proj,v_proj"]
    head, plain = plan(*qlora), plan(*qlora, "--no-quantized-head")
    assert head.spec.quantize_head and not plain.spec.quantize_head and not head.spec.double_quant
    assert head.estimate.weights - plain.estimate.weights == pytest.approx(V * H * (4.5 / 8 - 2))


def test_kbit_upcast_stores_a_quantized_models_other_params_in_fp32():
    """peft's prepare_model_for_kbit_training casts embeddings, norms and the head to fp32."""
    qlora = ["--adapter", "qlora", "--lora-r", "8", "--target-modules", "q_proj,v_proj"]
    upcast, kept = plan(*qlora), plan(*qlora, "--no-kbit-upcast")
    unquantized = 2 * V * H + (2 * L + 1) * H  # embedding + head + 2 norms per layer + final norm
    assert upcast.estimate.weights - kept.estimate.weights == unquantized * (4 - 2)
    assert upcast.to_json()["settings"]["precision"] == "mixed" and kept.to_json()["settings"]["precision"] == "bf16"


@pytest.mark.parametrize("name", list(PROFILES))
@pytest.mark.parametrize("adapter", ["lora", "qlora"])
def test_a_profile_equals_its_explicit_flags(name, adapter):
    run = [*QV[2:], "--adapter", adapter]
    by_name = plan(*run, "--profile", name)
    explicit = plan(*run, *shlex.split(PROFILES[name].command_line(quantized=adapter == "qlora")))
    assert by_name.spec == explicit.spec
    assert by_name.estimate.breakdown() == explicit.estimate.breakdown()


def test_flags_override_the_profile():
    result = plan(*QV, "--profile", "litgpt", "--adapter-dtype", "fp32", "--no-keep-previous-graph")
    assert result.spec.adapter_bytes == 4 and not result.spec.keeps_previous_graph
    assert result.spec.precision == "bf16"  # the rest of litgpt stays
    assert plan(*QV, "--profile", "transformers-peft", "--adapter", "qlora").spec.gradient_checkpointing
    assert not plan(
        *QV, "--profile", "transformers-peft", "--adapter", "qlora", "--no-gradient-checkpointing"
    ).spec.gradient_checkpointing


def test_tunelab_profile_is_the_default_and_is_what_the_loop_does():
    assert DEFAULT_PROFILE == "tunelab" and find_profile(None).name == "tunelab"
    default, named = plan(*QV), plan(*QV, "--profile", "tunelab")
    assert default.profile == named.profile == "tunelab"
    assert default.spec == named.spec and default.estimate.total == named.estimate.total
    spec = default.spec  # peft fp32 adapters, logits recomputed per chunk (methods/lm_loss.py), nothing kept
    assert spec.adapter_bytes == 4 and spec.loss == "recomputed"
    assert not spec.keeps_previous_graph and not spec.optimizer_in_backward and not spec.offload_activations
    assert spec.kbit_upcast and not spec.quantized_inputs_saved and not spec.quantize_head
    assert spec.precision == "bf16"  # on a GPU tunelab loads bf16 weights (models/load.py torch_dtype auto)
    assert make_plan(PlanFlags(model="llama-2-7b", device="cpu")).spec.precision == "mixed"  # fp32 + autocast


def test_unknown_profile_lists_the_valid_ones(capsys):
    with pytest.raises(ConfigError, match="tunelab, transformers-peft, litgpt, torchtune"):
        find_profile("peft")
    assert main(["plan", *BASE, "--profile", "peft"]) == 2
    err = capsys.readouterr().err
    assert "--profile" in err and "litgpt" in err and "fix:" in err and "Traceback" not in err


def test_bad_mechanism_values_name_the_flag(capsys):
    assert main(["plan", *BASE, *QV, "--adapter-dtype", "int4"]) == 2
    err = capsys.readouterr().err
    assert "--adapter-dtype" in err and "fp32, bf16, fp16" in err and "fix:" in err
    assert main(["plan", *BASE, *QV, "--dequant-copies", "0"]) == 2
    err = capsys.readouterr().err
    assert "--dequant-copies" in err and "fix:" in err and "Traceback" not in err


def test_json_includes_the_profile_and_help_lists_them(capsys, monkeypatch):
    assert main(["plan", *BASE, *QV, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["profile"] == "tunelab" and data["settings"]["adapter_bytes"] == 4
    assert main(["plan", *BASE, *QV, "--profile", "torchtune", "--chunked-loss", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["profile"] == "torchtune"
    assert data["settings"]["adapter_bytes"] == 2 and data["settings"]["loss"] == "chunked"
    assert data["breakdown"]["logits"] == pytest.approx(N * V * 2 / GIB, abs=1e-4)
    assert all(name in help_text() for name in PROFILES)
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["plan", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--profile" in out and all(f"{name} = " in out for name in PROFILES)


@pytest.fixture(scope="module")
def bench():
    """bench/memory_published.py as a module (registered: its dataclasses need their module)."""
    path = Path(__file__).resolve().parents[2] / "bench" / "memory_published.py"
    spec = importlib.util.spec_from_file_location("memory_published", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.parametrize("case_id", ["L4", "T2", "E7", "E10"])
def test_cli_reproduces_the_published_comparison(case_id, bench, capsys):
    case = next(c for c in bench.CASES if c.id == case_id)
    assert case.command.startswith("tunelab plan --profile ")
    assert main(["plan", *case.argv, "--json"]) == 0
    total = json.loads(capsys.readouterr().out)["total_gib"] * GIB
    unit = 1e9 if case.unit == "GB" else GIB
    assert total / unit == pytest.approx(bench.plan_case(case).planned, abs=1e-4 * GIB / unit)
    # the planner numbers docs/memory.md prints for these cases
    assert round(bench.plan_case(case).planned, 2) == {"L4": 13.23, "T2": 14.18, "E7": 20.83, "E10": 4.69}[case_id]


@pytest.mark.parametrize(
    ("probe", "planned"), [('{"fp32": 100, "bf16": 10}', "fp32"), ('{"fp32": 10, "bf16": 100}', "mixed")]
)
def test_preflight_plans_the_precision_the_probe_chose(probe, planned, monkeypatch):
    """`precision: auto` trains in what the probe measured faster; the pre-flight plan follows it."""
    from tunelab.config import load_config
    from tunelab.memory.preflight import spec_from_config

    monkeypatch.setenv("TUNELAB_PRECISION_PROBE", probe)
    config = load_config(overrides=["model.name=tiny", "training.precision=auto"])
    assert spec_from_config(config, "cpu").precision == planned


def test_preflight_uses_the_tunelab_profile_for_a_quantized_base():
    from tunelab.config import load_config
    from tunelab.memory.preflight import spec_from_config

    config = load_config(overrides=["model.name=tiny", "adapter.type=qlora", "model.quantization=nf4"])
    spec = spec_from_config(config, "cpu")
    assert spec.kbit_upcast and spec.adapter_bytes == 4 and spec.loss == "recomputed"


@pytest.mark.parametrize(("saved", "planned"), [("fp32", "fp32"), ("bf16", "mixed"), (None, "mixed")])
def test_plan_of_a_run_folder_uses_the_precision_its_loop_chose(saved, planned, tmp_path, capsys):
    """A CPU run whose probe chose fp32 trained in fp32: `tunelab plan --model runs/X` plans that,
    not the bf16 autocast of the device rule (kept for runs without precision.json)."""
    import yaml

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "smollm2-135m"}}))
    if saved:
        (run / "precision.json").write_text(json.dumps({"dtype": saved, "device": "cpu", "requested": "auto"}))
    assert main(["plan", "--model", str(run), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["precision"] == planned
    assert main(["plan", "--model", str(run), "--device", "cuda", "--json"]) == 0  # not where it ran: device rule
    assert json.loads(capsys.readouterr().out)["settings"]["precision"] == "bf16"
