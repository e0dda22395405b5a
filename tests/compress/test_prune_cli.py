"""``tunelab prune`` end to end on tiny: the saved folder loads in plain transformers and equals the pruned
model, the report's numbers are recomputable, recovery runs through the loop, and a pruned model exports
(HF, GGUF with the right block_count / feed_forward_length, --verify) and serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunelab.cli.main import main
from tunelab.compress.calib import load_calibration, perplexity
from tunelab.compress.config import load_prune_config
from tunelab.compress.prune import decoder_layers, drop_layers

DATA = Path(__file__).resolve().parents[2] / "examples" / "data" / "quickstart.jsonl"
COMMON = ["--calib", str(DATA), "--validation-split", "0.2", "--max-length", "128"]


def run_prune(out: Path, *args: str) -> dict:
    assert main(["prune", "tiny", *args, *COMMON, "--out", str(out)]) == 0
    return json.loads((out / "prune.json").read_text())


@pytest.fixture(scope="module")
def depth_out(tmp_path_factory, tiny_path):
    out = tmp_path_factory.mktemp("prune") / "depth"
    return out, run_prune(out, "--method", "depth", "--drop-layers", "1", "--recover", "none")


@pytest.fixture(scope="module")
def width_out(tmp_path_factory, tiny_path):
    out = tmp_path_factory.mktemp("prune") / "width"
    return out, run_prune(out, "--method", "width", "--keep", "0.5", "--recover", "none")


def held_out(tokenizer):
    config = load_prune_config(None, [f"data.path={DATA}", "data.validation_split=0.2", "data.max_length=128"])
    return load_calibration(config.data, tokenizer)


def test_depth_prune_drops_the_lowest_scoring_layer_and_saves_a_loadable_folder(depth_out, tiny_path, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, report = depth_out
    scores = report["removed"]["layer_scores"]
    assert report["removed"]["dropped_layers"] == [min(range(4), key=scores.__getitem__)]
    loaded = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32).eval()
    assert loaded.config.num_hidden_layers == 3 and len(decoder_layers(loaded)) == 3
    expected = drop_layers(tiny_model, report["removed"]["dropped_layers"]).eval()
    ids = torch.tensor([[5, 60, 200, 31, 7, 90]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, expected(ids).logits, atol=1e-6)
    # every number of the report is recomputable from the saved folder
    data = held_out(AutoTokenizer.from_pretrained(out / "model"))
    base, pruned = report["stages"]
    assert pruned["params"] == loaded.num_parameters() < base["params"]
    assert pruned["perplexity"] == pytest.approx(perplexity(loaded, data), rel=1e-6)
    original = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    assert base["perplexity"] == pytest.approx(perplexity(original, data), rel=1e-6)
    assert pruned["weights_gib"] < base["weights_gib"] and pruned["planned_gib"] < base["planned_gib"]


def test_the_planner_reads_the_pruned_sizes(depth_out, width_out):
    from tunelab.memory.sources import load_model_source

    assert load_model_source(str(depth_out[0])).arch.num_hidden_layers == 3
    assert load_model_source(str(width_out[0] / "model")).arch.intermediate_size == 96


def test_width_prune_narrows_every_mlp(width_out):
    from transformers import AutoModelForCausalLM

    out, report = width_out
    assert report["removed"] == {"intermediate_size_before": 192, "intermediate_size": 96, "refit": True}
    loaded = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32)
    assert loaded.config.intermediate_size == 96
    for layer in decoder_layers(loaded):
        assert layer.mlp.gate_proj.weight.shape == (96, 64) and layer.mlp.down_proj.weight.shape == (64, 96)
    assert report["stages"][1]["params"] == 229_952 - 4 * 3 * 64 * 96


@pytest.mark.parametrize("which, key, value", [("depth", "block_count", 3), ("width", "feed_forward_length", 96)])
def test_pruned_models_export_to_gguf_with_their_sizes_and_verify(which, key, value, depth_out, width_out, tmp_path):
    from gguf import GGUFReader

    from tunelab.export import export
    from tunelab.export.verify import verify

    out = {"depth": depth_out, "width": width_out}[which][0]
    gguf = export(out, "gguf", tmp_path / "gguf", quant="f32").path
    hf = export(out, "hf", tmp_path / "hf").path
    fields = GGUFReader(str(gguf)).fields
    assert int(fields[f"llama.{key}"].contents()) == value
    report = verify(out, [gguf, hf], max_new_tokens=12)
    assert report.ok
    by_kind = {t.kind: t for t in report.targets}
    assert {"hf", "gguf"} <= set(by_kind)  # + llama.cpp loading the pruned GGUF when llama-cpp-python is installed
    for target in report.targets:  # f32 GGUF (read back by transformers) and the HF copy: the pruned model exactly
        tolerance = 2e-2 if target.kind == "llama.cpp" else 1e-4  # llama.cpp's own arithmetic, as tests/export
        assert target.agreement == 1.0 and target.max_logit_diff < tolerance, target.name


def test_pruned_model_serves_its_greedy_answer(depth_out):
    import httpx
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.infer import load_engine
    from tunelab.serve import ServerSettings, ServerThread, create_app

    out, _ = depth_out
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        greedy = model.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1] :]
    engine = load_engine(str(out), device="cpu")
    with ServerThread(create_app(engine, ServerSettings(max_tokens_limit=16))) as server:
        model_id = httpx.get(f"{server.url}/v1/models", timeout=30).json()["data"][0]["id"]
        body = {"model": model_id, "messages": messages, "max_tokens": 8, "temperature": 0}
        reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120).json()
    stops = model.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops])
    answer = next((greedy[:i] for i, t in enumerate(greedy.tolist()) if t in stops), greedy)  # the server drops EOS
    assert reply["choices"][0]["message"]["content"] == tokenizer.decode(answer, skip_special_tokens=True)


def test_lora_recovery_runs_through_the_loop_and_its_val_ppl_is_the_reported_one(tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "rec"
    report = run_prune(out, "--method", "depth", "--drop-layers", "1", "--recover-steps", "2", "--lr", "1e-2")
    base, pruned, recovered = report["stages"]
    assert report["recovery"]["method"] == "sft" and report["recovery"]["steps"] == 2
    # the recovery run's validation split is the held-out set: the loop's val_ppl is the same number
    assert recovered["perplexity"] == pytest.approx(report["recovery"]["val_ppl"], rel=1e-4)
    assert recovered["perplexity"] != pruned["perplexity"]
    assert (out / "recovery" / "adapter").is_dir() and (out / "pruned" / "config.json").is_file()
    run_config = (out / "recovery" / "config.yaml").read_text()
    assert str(out / "pruned") in run_config and ".tmp-" not in run_config  # points at the final folder
    loaded = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32)
    assert loaded.config.num_hidden_layers == 3
    assert not any("lora" in name for name, _ in loaded.named_parameters())


def test_magnitude_masks_survive_recovery_and_shrink_nothing(tmp_path, tiny_path):
    from transformers import AutoModelForCausalLM

    from tunelab.compress.magnitude import prunable_weights

    out = tmp_path / "mag"
    report = run_prune(out, "--method", "magnitude", "--sparsity", "0.5", "--recover-steps", "2", "--lr", "1e-2")
    assert [s["sparsity"] for s in report["stages"]] == [pytest.approx(0.0, abs=1e-3), 0.5, 0.5]
    assert any("neither" in note for note in report["notes"])
    loaded = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32)
    weights = prunable_weights(loaded).values()
    total = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) == round(0.5 * total)
    assert report["stages"][2]["params"] == report["stages"][0]["params"]
    size = (out / "model" / "model.safetensors").stat().st_size
    assert abs(size - (Path(tiny_path) / "model.safetensors").stat().st_size) < 4096  # same dense tensors


def test_distill_recovery_uses_the_unpruned_model_as_teacher(tmp_path):
    from tunelab.methods import METHODS

    if "distill" not in METHODS:
        pytest.skip("method: distill is not in this tree")
    out = tmp_path / "distill"
    report = run_prune(out, "--method", "width", "--keep", "0.5", "--recover", "distill", "--recover-steps", "2")
    assert report["recovery"]["method"] == "distill"
    assert "teacher: tiny" in (out / "recovery" / "config.yaml").read_text()


def test_a_run_folder_is_merged_first_and_keeps_its_template(tmp_path, tiny_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.config import load_config, save_config
    from tunelab.models.adapters import attach_adapter
    from tunelab.models.load import load_tokenizer, save_trained
    from tunelab.models.merge import load_merged

    config = load_config(
        None, ["model.name=tiny", "adapter.r=4", "data.template=alpaca", "name=run", f"output_dir={tmp_path}"]
    )
    torch.manual_seed(0)
    model = attach_adapter(
        AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32),
        config.adapter,
        str(tiny_path),
        gradient_checkpointing=False,
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    run = tmp_path / "run"
    save_trained(model, load_tokenizer(tiny_path), run / "adapter", "lora", data=config.data)
    save_config(config, run / "config.yaml")

    out = tmp_path / "pruned"
    assert (
        main(
            [
                "prune",
                str(run),
                "--method",
                "depth",
                "--drop-layers",
                "1",
                "--recover",
                "none",
                *COMMON,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "prune.json").read_text())
    merged = load_merged(run)
    assert report["stages"][0]["perplexity"] == pytest.approx(perplexity(merged.model, held_out(merged.tokenizer)))
    template = AutoTokenizer.from_pretrained(out / "model").chat_template
    assert "### Instruction:" in template and template == merged.tokenizer.chat_template


def test_bad_options_are_clear_errors(tmp_path, capsys):
    assert main(["prune", "tiny", "--method", "depth", *COMMON, "--out", str(tmp_path / "x")]) == 2
    assert "method depth needs prune.drop_layers" in capsys.readouterr().err
    assert main(["prune", "tiny", "--method", "width", "--out", str(tmp_path / "y")]) == 2
    assert "fix: pass --calib FILE" in capsys.readouterr().err
    assert (
        main(
            [
                "prune",
                "tiny",
                "--method",
                "depth",
                "--layers",
                "7",
                "--recover",
                "none",
                *COMMON,
                "--out",
                str(tmp_path / "z"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "out of range" in err and "Traceback" not in err
    assert not (tmp_path / "z").exists()  # nothing left behind


def test_the_bundled_example_copies_and_runs_with_overrides(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["examples", "copy", "prune", "mine"]) == 0
    assert "next: tunelab prune mine/prune.yaml" in capsys.readouterr().err
    config = load_prune_config(tmp_path / "mine" / "prune.yaml")
    assert (config.prune.method, config.prune.drop_layers, config.recover.recover) == ("depth", 4, "lora")
    assert Path(config.data.path).is_file()
    # the same file on tiny: key=value overrides like `tunelab train`, flags on top
    assert (
        main(
            ["prune", "mine/prune.yaml", "model.name=tiny", "prune.drop_layers=1", "--recover", "none", "--out", "out"]
        )
        == 0
    )
    report = json.loads((tmp_path / "out" / "prune.json").read_text())
    assert report["source"] == "tiny" and len(report["removed"]["dropped_layers"]) == 1
