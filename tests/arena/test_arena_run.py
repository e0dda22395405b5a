"""``tunelab arena run`` end to end on tiny: answers, a reward-model judge, ratings, report files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.align.conftest import preference_rows, tiny_config, write_jsonl
from tunelab.evaluate.arena.judges import Judgment, battles_from
from tunelab.evaluate.arena.ratings import leaderboard

PROMPTS = ["What is 2 plus 3?", "What is 4 plus 4?", "Say hello."]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny reward model (the judge) and a tiny DPO run (a contestant)."""
    from tunelab.train.loop import train

    tmp = tmp_path_factory.mktemp("arena_runs")
    data = (write_jsonl(tmp / "t.jsonl", preference_rows(32, 1)), None)
    reward = train(tiny_config(tmp, "reward", data, training={"max_steps": 8, "learning_rate": 1e-2}))
    dpo = train(tiny_config(tmp, "dpo", data, training={"max_steps": 4, "learning_rate": 2e-2}))
    prompts = tmp / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n\n")
    return reward.run_dir, dpo.run_dir, prompts


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_arena_run_with_reward_judge(runs, tmp_path, capsys):
    from tunelab.cli.main import main
    from tunelab.methods.reward import RewardScorer

    reward_dir, dpo_dir, prompts = runs
    out = tmp_path / "arena"
    code = main(
        [
            "arena",
            "run",
            "--models",
            "tiny",
            dpo_dir,
            "tiny",
            "--prompts",
            str(prompts),
            "--judge",
            f"reward:{reward_dir}",
            "--out",
            str(out),
            "--max-new-tokens",
            "6",
            "--bootstrap",
            "50",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "answers tiny 1/1" in captured.err  # plain progress lines off a terminal
    assert "position consistency 100.0%" in captured.out  # a reward model never sees an order

    answers = _rows(out / "answers.jsonl")
    assert [a["model"] for a in answers[::3]] == ["tiny", "dpo-test", "tiny#2"]
    assert [a["prompt"] for a in answers[:3]] == PROMPTS
    by_model = {m: [a["answer"] for a in answers if a["model"] == m] for m in ("tiny", "dpo-test", "tiny#2")}
    assert by_model["tiny"] == by_model["tiny#2"]  # greedy: the same model answers the same

    judgments = [Judgment(**j) for j in _rows(out / "judgments.jsonl")]
    assert len(judgments) == 2 * 3 * 3  # 3 prompts x 3 pairs x both orders
    scorer = RewardScorer.load(reward_dir)
    for j in judgments[::2]:
        a, b = (
            next(x["answer"] for x in answers if x["model"] == m and x["prompt_id"] == j.prompt_id)
            for m in (j.model_a, j.model_b)
        )
        prompt = next(x["prompt"] for x in answers if x["prompt_id"] == j.prompt_id)
        # as the judge does: each distinct answer scored once (identical answers tie exactly; the same
        # text in two rows of one batch may differ in the last bits)
        unique = sorted({a, b})
        score = dict(zip(unique, scorer.score([(prompt, x) for x in unique]), strict=True))
        s_a, s_b = score[a], score[b]
        expected = "tie" if s_a == s_b else ("a" if s_a > s_b else "b")
        assert j.outcome == expected, (j, s_a, s_b)

    board = json.loads((out / "leaderboard.json").read_text())
    expected = leaderboard(battles_from(judgments, per_vote=False), ["tiny", "dpo-test", "tiny#2"], rounds=50, seed=0)
    assert [r["model"] for r in board["ratings"]] == [r.model for r in expected]
    assert [r["bt"] for r in board["ratings"]] == pytest.approx([r.bt for r in expected])
    assert board["win_rates"]["tiny"]["tiny#2"] == 0.5  # identical answers tie
    assert board["judge"]["position_consistency"] == 1.0
    assert (out / "ratings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "leaderboard.txt").read_text()
    assert "95% CI" in table and "dpo-test" in table and "\x1b" not in table


def test_rerun_reuses_answers_until_settings_change(runs, tmp_path):
    from tunelab.evaluate.arena.run import run_arena
    from tunelab.infer.types import SamplingParams

    reward_dir, dpo_dir, prompts = runs
    out = tmp_path / "arena"
    args = (["tiny", dpo_dir], prompts, f"reward:{reward_dir}", out)
    run_arena(*args, params=SamplingParams(max_new_tokens=4), rounds=20)
    rows = _rows(out / "answers.jsonl")
    rows[0]["answer"] = "EDITED"
    (out / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_arena(*args, params=SamplingParams(max_new_tokens=4), rounds=20)
    assert _rows(out / "answers.jsonl")[0]["answer"] == "EDITED"  # reused, not generated again
    run_arena(*args, params=SamplingParams(max_new_tokens=5), rounds=20)
    assert _rows(out / "answers.jsonl")[0]["answer"] != "EDITED"  # new settings: generated again


def _arena_run(*args: str) -> int:
    from tunelab.cli.main import main

    return main(["arena", "run", *args])


def test_arena_run_errors(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Say hello.\n")
    assert (
        _arena_run("--models", "tiny", "--prompts", str(prompts), "--judge", "human:x", "--out", str(tmp_path / "o"))
        == 2
    )
    assert "at least two models" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    assert (
        _arena_run(
            "--models", "tiny", "tiny", "--prompts", str(bad), "--judge", "llm:tiny", "--out", str(tmp_path / "o")
        )
        == 2
    )
    assert "bad.jsonl line 2: needs a non-empty prompt string" in capsys.readouterr().err
    assert (
        _arena_run(
            "--models", "tiny", "tiny", "--prompts", str(prompts), "--judge", "oracle:x", "--out", str(tmp_path / "o")
        )
        == 2
    )
    assert "unknown arena judge 'oracle'" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == sorted([prompts, bad])  # a refused run writes nothing


@pytest.mark.parametrize(
    "flags",
    [["--models", "tiny", "tiny"], ["--models", "tiny", "--models", "tiny"], ["--models=tiny", "--models", "tiny"]],
)
def test_models_flag_takes_a_list(flags, tmp_path, capsys):
    missing = tmp_path / "missing.txt"  # fails after the model count check: both models were read
    assert _arena_run(*flags, "--prompts", str(missing), "--judge", "llm:x", "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "missing.txt: file not found" in err and "two models" not in err
