"""The precision probe: decisions from measurements (injected, never timed here), its cache,
the explicit-bf16 warning, the run folder's record and the inference dtype of ``auto``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunelab.errors import ConfigError
from tunelab.models import precision
from tunelab.models.precision import PROBE_ENV, choose_precision, decide, report_precision

SLOW_BF16 = {"fp32": 130.0, "bf16": 0.9}  # an AVX2 CPU (issue 9)
FAST_BF16 = {"fp32": 100.0, "bf16": 240.0}  # an AVX-512 BF16 / AMX CPU


@pytest.fixture()
def inject(monkeypatch):
    def set_gflops(gflops: dict[str, float]) -> None:
        monkeypatch.setenv(PROBE_ENV, json.dumps(gflops))

    return set_gflops


@pytest.mark.parametrize(
    ("gflops", "expected"),
    [
        (SLOW_BF16, "fp32"),
        (FAST_BF16, "bf16"),
        ({"fp32": 100.0, "bf16": 105.0}, "fp32"),  # within the 1.1x margin: not measurably faster
        ({"fp32": 100.0, "bf16": 111.0}, "bf16"),
        ({"fp32": 10.0, "fp16": 80.0}, "fp16"),  # a GPU without bf16
        ({"fp32": 10.0, "bf16": 5.0, "fp16": 80.0}, "fp16"),  # emulated bf16, real fp16 tensor cores
        ({"fp32": 10.0, "bf16": 40.0, "fp16": 80.0}, "bf16"),  # bf16 preferred: no loss scaling
        ({"fp32": 100.0}, "fp32"),
    ],
)
def test_decide_uses_only_the_measurements(gflops, expected):
    assert decide(gflops) == expected


def test_auto_follows_injected_measurements(inject):
    inject(SLOW_BF16)
    slow = choose_precision("auto", "cpu")
    assert (slow.dtype, slow.mixed_precision, slow.source, slow.peak_gflops) == ("fp32", "no", "injected", 130.0)
    inject(FAST_BF16)
    fast = choose_precision("auto", "cpu")
    assert (fast.dtype, fast.mixed_precision, fast.torch_dtype, fast.peak_gflops) == (
        "bf16",
        "bf16",
        torch.bfloat16,
        240.0,
    )
    assert fast.warning is None


def test_explicit_bf16_on_a_slow_device_warns_with_both_numbers(inject, tmp_path):
    from tunelab.utils.log import console

    inject(SLOW_BF16)
    choice = choose_precision("bf16", "cpu")
    assert (choice.dtype, choice.source) == ("bf16", "explicit")  # the config is obeyed
    assert "0.9 GFLOP/s" in choice.warning and "130.0 GFLOP/s" in choice.warning
    assert "144.4x slower" in choice.warning  # 130 / 0.9
    assert "fix: set training.precision=auto" in choice.warning
    with console.capture() as captured:
        report_precision(choice, tmp_path)
    text = captured.get()
    assert "precision: bf16 (set in the config; matmul GFLOP/s on cpu: fp32 130.0, bf16 0.9" in text
    assert "warning: precision=bf16 is slower than fp32" in text
    saved = json.loads((tmp_path / "precision.json").read_text())
    assert saved["dtype"] == "bf16" and saved["gflops"] == SLOW_BF16 and saved["peak_gflops"] == 0.9
    inject(FAST_BF16)
    assert choose_precision("bf16", "cpu").warning is None


def test_probe_is_cached_per_machine_and_kernel_settings(monkeypatch, tmp_path):
    monkeypatch.delenv(PROBE_ENV, raising=False)
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(precision, "_MEMO", {})
    monkeypatch.setattr(precision, "_load_per_cpu", lambda device: None)  # no re-probe for a busy machine here
    calls = []

    def fake_measure(device, budget_s=precision.BUDGET_S):
        calls.append(device)
        return dict(SLOW_BF16)

    monkeypatch.setattr(precision, "measure", fake_measure)
    first = choose_precision("auto", "cpu")
    assert (first.dtype, first.source, calls) == ("fp32", "probe", ["cpu"])
    cached = json.loads((tmp_path / "precision" / first.cache.rsplit("/", 1)[1]).read_text())
    assert cached["gflops"] == SLOW_BF16
    assert cached["key"]["torch"] == torch.__version__
    assert cached["key"]["capability"] == torch.backends.cpu.get_cpu_capability()
    monkeypatch.setattr(precision, "_MEMO", {})  # a new process: read back from disk
    second = choose_precision("auto", "cpu")
    assert (second.dtype, second.source, second.gflops, calls) == ("fp32", "cache", SLOW_BF16, ["cpu"])
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # other kernels: measured again, cached apart
    third = choose_precision("auto", "cpu")
    assert (third.source, calls, third.key["env"]) == ("probe", ["cpu", "cpu"], {"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert third.cache != first.cache


def test_real_probe_measures_every_cpu_dtype_without_touching_the_seeded_rng():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    gflops = precision.measure("cpu", budget_s=0.05)
    assert set(gflops) == {"fp32", "bf16"} and all(v > 0 for v in gflops.values())
    assert torch.equal(torch.rand(3), expected)


def test_bad_injection_names_the_variable(inject, monkeypatch, tmp_path):
    monkeypatch.setenv(PROBE_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match=f"{PROBE_ENV}=.*missing.json: cannot read it"):
        choose_precision("auto", "cpu")
    inject({"bf16": 3.0})
    with pytest.raises(ConfigError, match='no "fp32" entry'):
        choose_precision("auto", "cpu")
    path = tmp_path / "probe.json"
    path.write_text(json.dumps({"key": {}, "gflops": FAST_BF16}))  # a cache file can be injected as is
    monkeypatch.setenv(PROBE_ENV, str(path))
    assert choose_precision("auto", "cpu").dtype == "bf16"


def test_auto_weights_for_inference_follow_the_probe_training_keeps_fp32(inject):
    from tunelab.config import ModelArgs
    from tunelab.models.load import dtype_name, quantization_config, torch_dtype

    inject(FAST_BF16)
    assert torch_dtype("auto", "cpu") == torch.bfloat16  # chat / serve / scoring
    assert dtype_name("auto", "cpu", for_training=True) == "fp32"  # master weights
    assert dtype_name("fp16", "cpu") == "fp16"  # an explicit dtype is kept
    nf4 = quantization_config(ModelArgs(quantization="nf4"), "cpu")
    assert nf4.bnb_4bit_compute_dtype == torch.float32  # bitsandbytes' CPU path
    inject(SLOW_BF16)
    assert torch_dtype("auto", "cpu") == torch.float32


def test_run_folder_records_the_choice_and_the_loop_uses_it(make_config, inject, capsys):
    from tunelab.train.loop import _precision, train

    inject(FAST_BF16)
    config = make_config("training.precision=auto", "training.max_steps=2", "name=fast")
    assert _precision(config, "cpu") == "bf16"  # accelerate's mixed_precision
    result = train(config)
    saved = json.loads((Path(result.run_dir) / "precision.json").read_text())
    assert (saved["dtype"], saved["requested"], saved["source"], saved["gflops"]) == (
        "bf16",
        "auto",
        "injected",
        FAST_BF16,
    )
    assert saved["peak_gflops"] == 240.0
    err = capsys.readouterr().err
    assert "precision: bf16 (chosen by measurement; matmul GFLOP/s on cpu: fp32 100.0, bf16 240.0" in err
    inject(SLOW_BF16)
    config = make_config("training.precision=auto", "training.max_steps=2", "name=slow")
    assert _precision(config, "cpu") == "no"
    result = train(config)
    saved = json.loads((Path(result.run_dir) / "precision.json").read_text())
    assert (saved["dtype"], saved["gflops"]) == ("fp32", SLOW_BF16)


def test_models_loaded_for_inference_use_the_choice_training_loads_fp32(inject):
    from tunelab.config import ModelArgs
    from tunelab.infer.load import load_engine
    from tunelab.models.load import load_model

    inject(FAST_BF16)
    engine = load_engine("tiny", device="cpu")  # chat / serve
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    trained, _ = load_model(ModelArgs(name="tiny"), for_training=True, device="cpu")
    assert next(trained.parameters()).dtype == torch.float32
    inject(SLOW_BF16)
    engine = load_engine("tiny", device="cpu")
    assert next(engine.model.parameters()).dtype == torch.float32


def fake_rounds(monkeypatch, overhead_s: dict[str, float], rate: dict[str, float]) -> list[tuple[str, int]]:
    """``_round_s`` as call overhead + FLOPs / rate, recording the (dtype, width) of each round."""
    calls = []

    def round_s(name, device, features):
        calls.append((name, features))
        return overhead_s[name] + 3 * 2 * precision.ROWS * precision.HIDDEN * features / rate[name]

    monkeypatch.setattr(precision, "_round_s", round_s)
    return calls


def test_probe_confirms_a_faster_looking_dtype_on_a_wide_layer(monkeypatch):
    # A busy machine: fp32 pays 50 ms of overhead a call, so bf16 (10x slower) looks faster at width 64.
    calls = fake_rounds(monkeypatch, {"fp32": 0.05, "bf16": 0.01}, {"fp32": 100e9, "bf16": 10e9})
    gflops = precision.measure("cpu", budget_s=0.0)  # no budget: only the confirmation may widen
    assert ("bf16", 256) in calls and max(f for _, f in calls) == 256
    assert gflops["bf16"] < gflops["fp32"] and decide(gflops) == "fp32"


def test_probe_measures_fast_dtypes_at_full_width(monkeypatch):
    calls = fake_rounds(monkeypatch, {"fp32": 0.0, "bf16": 0.0}, {"fp32": 100e9, "bf16": 240e9})
    gflops = precision.measure("cpu")
    assert {("fp32", 4 * precision.HIDDEN), ("bf16", 4 * precision.HIDDEN)} <= set(calls)
    assert gflops == pytest.approx({"fp32": 100.0, "bf16": 240.0}, rel=1e-3)
    slow = fake_rounds(monkeypatch, {"fp32": 0.0, "bf16": 0.0}, {"fp32": 130e9, "bf16": 0.9e9})
    gflops = precision.measure("cpu")  # bf16 leaves the race at once; fp32 goes on to full width
    assert {f for n, f in slow if n == "bf16"} == {64} and ("fp32", 4 * precision.HIDDEN) in slow
    assert gflops == pytest.approx({"fp32": 130.0, "bf16": 0.9}, rel=1e-3)


def test_explicit_fp16_training_on_cpu_is_refused_not_silently_fp32(make_config):
    """accelerate drops fp16 on CPU silently; the loop must say so instead of training in fp32."""
    from tunelab.errors import ConfigError
    from tunelab.train.loop import train

    with pytest.raises(ConfigError, match=r"training.precision: fp16 .*\n  fix: "):
        train(make_config("name=fp16-cpu", "training.precision=fp16", "training.max_steps=1"))


@pytest.fixture()
def probe_home(monkeypatch, tmp_path):
    """A real cache under a temporary TUNELAB_HOME, a counting fake ``measure`` and a settable load."""
    monkeypatch.delenv(PROBE_ENV, raising=False)
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path))
    monkeypatch.setattr(precision, "_MEMO", {})
    state = {"load": 0.1, "results": [], "calls": 0}

    def fake_measure(device, budget_s=precision.BUDGET_S):
        state["calls"] += 1
        return dict(state["results"].pop(0))

    monkeypatch.setattr(precision, "measure", fake_measure)
    monkeypatch.setattr(precision, "_load_per_cpu", lambda device: state["load"])
    return state


def _new_process(monkeypatch):
    monkeypatch.setattr(precision, "_MEMO", {})


def test_a_probe_taken_on_a_busy_cpu_is_measured_again_once_it_is_quieter(probe_home, monkeypatch):
    probe_home["load"] = 8.5  # 17 runnable processes on 2 cores
    probe_home["results"] = [{"fp32": 12.7, "bf16": 3.0}, {"fp32": 110.0, "bf16": 2.5}]
    first = choose_precision("auto", "cpu")
    assert (first.source, first.peak_gflops) == ("probe", 12.7)
    assert json.loads(Path(first.cache).read_text())["load_per_cpu"] == 8.5
    _new_process(monkeypatch)
    probe_home["load"] = 8.2  # still busy: not quieter by QUIETER_BY, the cache is used
    assert choose_precision("auto", "cpu").source == "cache" and probe_home["calls"] == 1
    _new_process(monkeypatch)
    probe_home["load"] = 0.3  # quiet: measured again; each dtype keeps its faster number
    again = choose_precision("auto", "cpu")
    assert (again.source, again.gflops, probe_home["calls"]) == ("probe", {"fp32": 110.0, "bf16": 3.0}, 2)
    _new_process(monkeypatch)  # probed quiet: trusted from now on
    assert choose_precision("auto", "cpu").source == "cache" and probe_home["calls"] == 2


def test_a_probe_flagged_stale_is_measured_again_and_the_flag_cleared(probe_home, monkeypatch):
    probe_home["results"] = [{"fp32": 40.0}, {"fp32": 30.0}]
    first = choose_precision("auto", "cpu")
    assert precision.mark_stale(first.cache) is True
    assert json.loads(Path(first.cache).read_text())["stale"] is True
    again = choose_precision("auto", "cpu")  # mark_stale also drops this process's memo
    assert (again.source, again.gflops, probe_home["calls"]) == ("probe", {"fp32": 40.0}, 2)  # max(40, 30)
    assert "stale" not in json.loads(Path(first.cache).read_text())
    assert precision.mark_stale(None) is False
    assert precision.mark_stale(Path(first.cache).with_name("missing.json")) is False
