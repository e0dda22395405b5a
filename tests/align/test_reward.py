"""Reward model and KTO on tiny: held-out ranking above chance; the saved head reloads exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.align.conftest import CHOSEN, REJECTED, preference_rows, tiny_config, unpaired_rows, write_jsonl


def _last_val(run_dir: str) -> dict:
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "val_accuracy" in r][-1]


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory):
    from tunelab.train.loop import train

    tmp = tmp_path_factory.mktemp("reward")
    data = (write_jsonl(tmp / "t.jsonl", preference_rows(48, 1)), write_jsonl(tmp / "v.jsonl", preference_rows(16, 2)))
    cfg = tiny_config(tmp, "reward", data, training={"max_steps": 15, "learning_rate": 1e-2})
    return train(cfg)


def test_reward_model_ranks_heldout_pairs(reward_run):
    assert reward_run.val["val_accuracy"] >= 0.9  # chance is 0.5
    assert reward_run.val["val_margin"] > 0
    assert Path(reward_run.run_dir, "reward_head.safetensors").is_file()


def test_saved_reward_model_reloads_to_identical_scores(reward_run):
    from tunelab.methods.reward import RewardScorer, score

    pairs = [("What is 3 plus 4?", CHOSEN.format(a=7)), ("What is 3 plus 4?", REJECTED.format(a=7))]
    first = score(reward_run.run_dir, pairs)
    again = RewardScorer.load(reward_run.run_dir).score(pairs, batch_size=1)  # different padding, same scores
    assert first == pytest.approx(again, abs=1e-5)
    assert first[0] > first[1]


def test_reward_cli_scores_a_pair(reward_run, capsys):
    from tunelab.cli.main import main
    from tunelab.methods.reward import score

    code = main(["reward", "score", reward_run.run_dir, "--prompt", "What is 2 plus 2?",
                 "--completion", CHOSEN.format(a=4), "--json"])
    assert code == 0
    value = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["scores"][0]
    assert value == pytest.approx(score(reward_run.run_dir, [("What is 2 plus 2?", CHOSEN.format(a=4))])[0], abs=1e-5)
    bad = main(["reward", "score", str(Path(reward_run.run_dir).parent), "--prompt", "x", "--completion", "y"])
    assert bad == 2 and "not a run folder" in capsys.readouterr().err


def test_kto_separates_heldout_examples(tmp_path):
    from tunelab.train.loop import train

    data = (write_jsonl(tmp_path / "t.jsonl", unpaired_rows(48, 1)),
            write_jsonl(tmp_path / "v.jsonl", unpaired_rows(16, 2)))
    cfg = tiny_config(tmp_path, "kto", data, method_args={"beta": 0.5},
                      training={"max_steps": 15, "eval_every": 5})
    result = train(cfg)
    val = _last_val(result.run_dir)
    assert val["val_accuracy"] >= 0.9
    assert val["val_reward_chosen"] > 0 > val["val_reward_rejected"]
