"""Stored human votes as a judge (each vote one battle) and ``tunelab arena leaderboard``."""

from __future__ import annotations

from tests.arena.conftest import answer_rows
from tunelab.evaluate.arena.judges import battles_from, judge_report, open_judge
from tunelab.evaluate.arena.ratings import Battle
from tunelab.evaluate.arena.run import make_pairs
from tunelab.evaluate.arena.store import VoteStore


def _cast(store: VoteStore, voter: str, left, right, verdict: str) -> None:
    shown = store.show(voter, left.prompt_id, left.prompt, None, (left.model, left.answer), (right.model, right.answer))
    store.vote(shown.id, voter, verdict)


def test_votes_become_judgments_of_the_matching_pairs(tmp_path):
    answers = {(a.model, a.prompt_id): a for a in answer_rows()}
    store = VoteStore(tmp_path / "votes.sqlite")
    alpha, beta = answers[("alpha", "p1")], answers[("beta", "p1")]
    _cast(store, "u1", alpha, beta, "left")  # alpha shown left and chosen
    _cast(store, "u2", beta, alpha, "left")  # beta shown left and chosen: the same pair, other order
    _cast(store, "u3", beta, alpha, "both_bad")
    _cast(store, "u1", answers[("alpha", "p2")], answers[("gamma", "p2")], "right")
    unrelated = answers[("alpha", "p1")].__class__("delta", "k", "p1", "q", None, "x")
    _cast(store, "u1", alpha, unrelated, "left")  # a model not in this arena: skipped

    judge = open_judge(f"human:{store.path}")
    judgments = judge.judge(make_pairs(answer_rows()))
    assert len(judgments) == 4 and judge.per_vote
    battles = battles_from(judgments, per_vote=True)
    assert battles == [
        Battle("alpha", "beta", "a"),
        Battle("alpha", "beta", "b"),
        Battle("alpha", "beta", "both_bad"),
        Battle("alpha", "gamma", "b"),
    ]
    report = judge_report(judge.name, judgments)
    # alpha-beta on p1 was voted in both orders: left won each time, i.e. a different model -> inconsistent
    assert (report.pairs_both_orders, report.position_consistency) == (1, 0.0)
    assert report.first_slot_win_rate == 2 / 3  # decisive votes: left, left, right


def test_leaderboard_cli(tmp_path, capsys):
    from tunelab.cli.main import main

    answers = {(a.model, a.prompt_id): a for a in answer_rows()}
    store = VoteStore(tmp_path / "votes.sqlite")
    for voter in ("u1", "u2", "u3"):
        _cast(store, voter, answers[("gamma", "p1")], answers[("beta", "p1")], "right")
    assert main(["arena", "leaderboard", "--db", str(store.path), "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["rank", "model", "BT"]
    assert lines[2].split()[1] == "beta" and lines[3].split()[1] == "gamma"
    assert "judge human:votes.sqlite: 3 judgments of 1 pairs" in out and "first-slot win rate 0.0%" in out
