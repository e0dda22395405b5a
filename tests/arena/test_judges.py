"""Judges: verdict parsing, both orders, position consistency, first-slot win rate, battles."""

from __future__ import annotations

import pytest

from tunelab.errors import ConfigError
from tunelab.evaluate.arena.judges import JUDGES, Judgment, Pair, battles_from, judge_report, open_judge, parse_verdict
from tunelab.evaluate.arena.ratings import Battle


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("[[A]]", "first"),
        ("Answer B is better. [[B]]", "second"),
        ("[[C]]", "tie"),
        ("[[tie]]", "tie"),
        ("Rules: reply [[A]], [[B]] or [[C]]. My verdict: [[B]]", "second"),  # the last bracketed letter counts
        ("A", "first"),
        ("b) because it is shorter", "second"),
        ("Tie.", "tie"),
        ("Answer A.", "first"),
        ("Both are fine", None),
        ("", None),
        ("Absolutely B", None),
    ],
)
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_judgment_outcome_is_relative_to_model_a():
    assert Judgment("p", "x", "y", "x", "first", "j").outcome == "a"
    assert Judgment("p", "x", "y", "y", "first", "j").outcome == "b"  # y shown first and chosen
    assert Judgment("p", "x", "y", "y", "second", "j").outcome == "a"
    assert Judgment("p", "x", "y", "x", "both_bad", "j").outcome == "both_bad"


def _both(prompt, first_verdict, second_verdict):
    return [Judgment(prompt, "x", "y", "x", first_verdict, "j"), Judgment(prompt, "x", "y", "y", second_verdict, "j")]


def test_report_and_battles_by_hand():
    judgments = (
        _both("p1", "first", "second")  # x wins in both orders: consistent
        + _both("p2", "first", "first")  # always the first slot: inconsistent -> tie
        + _both("p3", "tie", "tie")  # consistent tie
        + _both("p4", "second", "first")  # y wins in both orders: consistent
    )
    report = judge_report("j", judgments)
    assert (report.pairs, report.pairs_both_orders) == (4, 4)
    assert report.position_consistency == 3 / 4
    # decisive verdicts: first, second, first, first, second, first -> 4 of 6 picked the first slot
    assert report.first_slot_win_rate == pytest.approx(4 / 6)
    assert report.tie_rate == pytest.approx(2 / 8)
    assert battles_from(judgments, per_vote=False) == [
        Battle("x", "y", "a"),
        Battle("x", "y", "tie"),
        Battle("x", "y", "tie"),
        Battle("x", "y", "b"),
    ]
    assert len(battles_from(judgments, per_vote=True)) == 8  # human votes: every vote is a battle
    assert "position consistency 75.0%" in report.line() and "first-slot win rate 66.7%" in report.line()


def test_unreadable_replies_are_ties_outside_consistency():
    judgments = _both("p1", "first", "second") + [
        Judgment("p2", "x", "y", "x", "tie", "j", "??", parsed=False),
        Judgment("p2", "x", "y", "y", "tie", "j", "??", parsed=False),
    ]
    report = judge_report("j", judgments)
    assert (report.pairs, report.pairs_both_orders, report.unparsed) == (2, 1, 2)
    assert report.position_consistency == 1.0  # two unreadable replies are not an agreement
    assert battles_from(judgments, per_vote=False)[1] == Battle("x", "y", "tie")
    assert "2 unreadable replies counted as ties" in report.line()


PAIRS = [
    Pair("p1", "q1", "x", "a good answer", "y", "meh"),
    Pair("p2", "q2", "x", "meh", "y", "good, and right"),
    Pair("p3", "q3", "x", "good", "y", "also good"),
]


def test_llm_judge_over_http_unbiased(judge_server):
    judge = open_judge(f"llm:{judge_server('content')}")
    judgments = judge.judge(PAIRS)
    judge.close()
    assert len(judgments) == 6 and {j.first for j in judgments[:2]} == {"x", "y"}  # both orders asked
    report = judge_report(judge.name, judgments)
    assert report.position_consistency == 1.0 and report.first_slot_win_rate == 0.5
    assert battles_from(judgments, per_vote=False) == [
        Battle("x", "y", "a"),
        Battle("x", "y", "b"),
        Battle("x", "y", "tie"),
    ]


def test_llm_judge_over_http_position_biased(judge_server):
    judge = open_judge(f"llm:{judge_server('first')}")
    judgments = judge.judge(PAIRS)
    report = judge_report(judge.name, judgments)
    assert report.position_consistency == 0.0 and report.first_slot_win_rate == 1.0
    # asking both orders cancels the bias: every pair becomes a tie instead of a win for x
    assert {b.outcome for b in battles_from(judgments, per_vote=False)} == {"tie"}


def test_unknown_judge_and_missing_argument():
    assert JUDGES.names() == ["reward", "llm", "human"]
    with pytest.raises(ConfigError, match="--judge: unknown arena judge 'rewrad'.*Did you mean 'reward'"):
        open_judge("rewrad:runs/rm")
    with pytest.raises(ConfigError, match="needs an argument"):
        open_judge("llm")
    with pytest.raises(ConfigError, match="no such vote database"):
        open_judge("human:/nonexistent/votes.sqlite")
