"""Votes → preference rows → DPO: the human-feedback loop closed on tiny."""

from __future__ import annotations

import json

import pytest

from tunelab.evaluate.arena.export import preference_rows
from tunelab.evaluate.arena.store import VoteStore

QUESTION = "What is 2 plus 2?"
GOOD, BAD, OTHER = "4 is the sum", "the sum is 4", "maybe 5"


def _vote(
    store: VoteStore,
    voter: str,
    left: tuple[str, str],
    right: tuple[str, str],
    verdict: str,
    prompt: str = QUESTION,
    system: str | None = None,
) -> None:
    shown = store.show(voter, prompt[:8], prompt, system, left, right)
    assert store.vote(shown.id, voter, verdict) is not None


@pytest.fixture()
def votes_db(tmp_path):
    store = VoteStore(tmp_path / "votes.sqlite")
    # GOOD vs BAD: 3 votes for GOOD (either side), 1 for BAD -> one row GOOD > BAD
    _vote(store, "v1", ("m1", GOOD), ("m2", BAD), "left")
    _vote(store, "v2", ("m2", BAD), ("m1", GOOD), "right")
    _vote(store, "v3", ("m1", GOOD), ("m2", BAD), "left")
    _vote(store, "v4", ("m2", BAD), ("m1", GOOD), "left")
    # GOOD vs OTHER: one each way -> cancelled; plus a tie and a both-bad that carry no preference
    _vote(store, "v1", ("m1", GOOD), ("m3", OTHER), "left")
    _vote(store, "v2", ("m1", GOOD), ("m3", OTHER), "right")
    _vote(store, "v3", ("m1", GOOD), ("m3", OTHER), "tie")
    _vote(store, "v4", ("m2", BAD), ("m3", OTHER), "both_bad")
    # identical answers cannot be a pair
    _vote(store, "v1", ("m1", GOOD), ("m4", GOOD), "left")
    # a prompt with a system prompt becomes a message list
    _vote(store, "v1", ("m3", OTHER), ("m2", BAD), "right", prompt="Add 2 and 2.", system="Be brief.")
    return store


def test_preference_rows_by_hand(votes_db):
    rows, summary = preference_rows(votes_db.votes())
    assert (summary.votes, summary.rows, summary.ties, summary.netted_out, summary.same_answer) == (10, 2, 2, 1, 1)
    first, second = rows
    assert first == {
        "prompt": QUESTION,
        "chosen": GOOD,
        "rejected": BAD,
        "votes": 2,
        "chosen_model": "m1",
        "rejected_model": "m2",
    }
    assert second["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 2."}]
    assert (second["chosen"], second["rejected"]) == (BAD, OTHER)


def test_export_cli_rows_train_dpo(votes_db, tmp_path, tiny_path, capsys):
    """The exported file is read by the DPO data reader as is, and a 2-step tiny DPO run trains on it."""
    from tests.align.conftest import tiny_config
    from tunelab.cli.main import main
    from tunelab.data.preference import load_alignment_data
    from tunelab.train.loop import train

    out = tmp_path / "prefs.jsonl"
    assert main(["arena", "export", "--db", str(votes_db.path), "--format", "preference", str(out)]) == 0
    assert "wrote 2 preference rows" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["chosen"] for r in rows] == [GOOD, BAD]

    from transformers import AutoTokenizer

    cfg = tiny_config(tmp_path, "dpo", (str(out), None), training={"max_steps": 2, "micro_batch_size": 2})
    cfg.data.validation_split = 0.0  # two rows: train on both

    data = load_alignment_data(cfg.data, AutoTokenizer.from_pretrained(tiny_path), "preference")
    assert len(data.train) == 2 and data.rejects == []
    result = train(cfg)
    metrics = [json.loads(line) for line in (tmp_path / "runs" / "dpo-test" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m and "step" in m]
    assert [m["step"] for m in steps][-1] == 2 and all(m["loss"] > 0 for m in steps)
    assert result.run_dir.endswith("dpo-test")


def test_export_errors(tmp_path, capsys):
    from tunelab.cli.main import main

    assert main(["arena", "export", "--db", str(tmp_path / "none.sqlite"), str(tmp_path / "o.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    VoteStore(tmp_path / "v.sqlite")
    assert main(["arena", "export", "--db", str(tmp_path / "v.sqlite"), "--format", "kto", str(tmp_path / "o")]) == 2
    assert "--format kto: unknown" in capsys.readouterr().err
