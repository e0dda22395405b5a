"""``tunelab prune --method depth+width`` and ``--recover-minutes`` on tiny."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunelab.cli.main import main
from tunelab.compress.calib import load_calibration, perplexity
from tunelab.compress.config import load_prune_config
from tunelab.compress.prune import decoder_layers, drop_layers, layer_scores, lowest
from tunelab.compress.width import channel_importance, channels_to_keep, down_grams, prune_channels
from tunelab.errors import ConfigError

DATA = Path(__file__).resolve().parents[2] / "examples" / "data" / "quickstart.jsonl"
COMMON = ["--calib", str(DATA), "--validation-split", "0.2", "--max-length", "128"]


def run_prune(out: Path, *args: str) -> dict:
    assert main(["prune", "tiny", *args, *COMMON, "--out", str(out)]) == 0
    return json.loads((out / "prune.json").read_text())


def test_depth_then_width_equals_the_two_prunes_in_turn(tmp_path, tiny_model, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    report = run_prune(
        tmp_path / "mix", "--method", "depth+width", "--drop-layers", "1", "--keep", "0.5", "--recover", "none"
    )
    removed = report["removed"]
    assert len(removed["dropped_layers"]) == 1 and removed["intermediate_size"] == 96 and removed["refit"] is True
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "mix" / "model", dtype=torch.float32).eval()
    assert loaded.config.num_hidden_layers == 3 and loaded.config.intermediate_size == 96
    # by hand: the lowest-scoring layer goes, then channels are scored in the 3-layer model
    config = load_prune_config(None, [f"data.path={DATA}", "data.validation_split=0.2", "data.max_length=128"])
    data = load_calibration(config.data, tiny_tokenizer, config.prune.calib_rows)
    model = tiny_model.eval()
    assert lowest(layer_scores(model, data.batches()), 1) == removed["dropped_layers"]
    drop_layers(model, removed["dropped_layers"])
    grams = down_grams(model, data.batches())  # the refit (on by default) fits down_proj on these
    prune_channels(model, channels_to_keep(channel_importance(model, data.batches()), 96), grams)
    for mine, theirs in zip(decoder_layers(model), decoder_layers(loaded), strict=True):
        assert torch.equal(mine.mlp.down_proj.weight, theirs.mlp.down_proj.weight)
    assert report["stages"][1]["perplexity"] == pytest.approx(perplexity(model, data), rel=1e-5)
    assert report["stages"][1]["params"] == loaded.num_parameters()


def test_depth_width_needs_a_layer_count():
    with pytest.raises(ConfigError, match="depth\\+width needs prune.drop_layers"):
        load_prune_config(None, ["prune.method=depth+width"]).prune.check()


def test_recover_minutes_stops_the_recovery_and_is_reported(tmp_path):
    # a 6 ms budget is spent while the recovery run loads: no step starts, the model is still saved
    report = run_prune(
        tmp_path / "budget",
        "--method",
        "depth",
        "--drop-layers",
        "1",
        "--recover-steps",
        "50",
        "--recover-minutes",
        "0.0001",
    )
    recovery = report["recovery"]
    assert recovery["steps"] == 0 and recovery["max_steps"] == 50 and recovery["max_minutes"] == 0.0001
    assert (tmp_path / "budget" / "model" / "config.json").is_file()


def test_no_refit_keeps_the_down_columns_and_refit_lowers_the_pruned_perplexity(tmp_path, tiny_model, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    args = ["--method", "width", "--keep", "0.25", "--recover", "none", "--calib-rows", "64"]
    plain = run_prune(tmp_path / "plain", *args, "--no-refit")
    refit = run_prune(tmp_path / "refit", *args)
    assert plain["removed"]["refit"] is False and refit["removed"]["refit"] is True
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "plain" / "model", dtype=torch.float32)
    config = load_prune_config(None, [f"data.path={DATA}", "data.validation_split=0.2", "data.max_length=128"])
    data = load_calibration(config.data, tiny_tokenizer, 64)
    kept = channels_to_keep(channel_importance(tiny_model, data.batches()), plain["removed"]["intermediate_size"])
    for index, original, pruned in zip(kept, decoder_layers(tiny_model), decoder_layers(loaded), strict=True):
        assert torch.equal(pruned.mlp.down_proj.weight, original.mlp.down_proj.weight[:, index])
    # the same channels go either way; the least-squares down_proj brings the held-out perplexity closer to the base
    assert refit["stages"][0]["perplexity"] == pytest.approx(plain["stages"][0]["perplexity"], rel=1e-6)
    assert refit["stages"][1]["perplexity"] < plain["stages"][1]["perplexity"]


def test_freeze_recovery_trains_every_layer_but_not_the_embeddings(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "freeze"
    report = run_prune(
        out,
        "--method",
        "depth",
        "--drop-layers",
        "1",
        "--recover",
        "lora",
        "--recover-adapter",
        "freeze",
        "--recover-steps",
        "2",
        "--lr",
        "1e-2",
    )
    assert report["recovery"]["adapter"] == "freeze" and report["recovery"]["steps"] == 2
    recovery = (out / "recovery" / "config.yaml").read_text()
    assert "freeze_train_layers: 3" in recovery  # all 3 layers left after the prune, not the default 2
    pruned, recovered = load_file(out / "pruned" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert torch.equal(pruned["model.embed_tokens.weight"], recovered["model.embed_tokens.weight"])
    for i in range(3):  # every layer moved, the first included
        key = f"model.layers.{i}.mlp.down_proj.weight"
        assert not torch.equal(pruned[key], recovered[key])


def test_refit_is_skipped_with_too_few_calibration_tokens(tmp_path):
    report = run_prune(tmp_path / "few", "--method", "width", "--keep", "0.5", "--recover", "none", "--calib-rows", "2")
    assert report["removed"]["refit"] is False
    assert report["notes"] == [report["removed"]["refit_skipped"]]
    assert "fewer than 4 per MLP channel (192)" in report["notes"][0] and "fix:" in report["notes"][0]
