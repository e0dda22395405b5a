"""The vote store: WAL, migrations, one transaction per vote, nothing lost on restart or concurrency."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from tunelab.errors import DataError
from tunelab.evaluate.arena.store import MIGRATIONS, VoteStore


def _show(store: VoteStore, voter: str, left: str = "x", right: str = "y"):
    return store.show(voter, "p1", "prompt", None, (left, f"answer of {left}"), (right, f"answer of {right}"))


def test_wal_and_migrations_recorded_once(tmp_path):
    path = tmp_path / "votes.sqlite"
    VoteStore(path)
    VoteStore(path)  # reopening applies nothing twice
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert [r[0] for r in db.execute("SELECT name FROM _migrations")] == [name for name, _ in MIGRATIONS]


def test_vote_survives_restart_and_double_click(tmp_path):
    path = tmp_path / "votes.sqlite"
    store = VoteStore(path)
    shown = _show(store, "alice")
    first = store.vote(shown.id, "alice", "left")
    again = store.vote(shown.id, "alice", "right")  # a double click keeps the first vote
    assert first.verdict == again.verdict == "left"
    del store
    reopened = VoteStore(path)  # a new process would see the same file
    (vote,) = reopened.votes()
    assert (vote.voter, vote.verdict, vote.model_left, vote.model_right) == ("alice", "left", "x", "y")
    assert vote.answer_left == "answer of x" and vote.created > 0
    assert reopened.counts("alice") == (1, 1) and reopened.counts("bob") == (0, 1)


def test_vote_needs_the_voter_it_was_shown_to(tmp_path):
    store = VoteStore(tmp_path / "votes.sqlite")
    shown = _show(store, "alice")
    assert store.vote(shown.id, "mallory", "left") is None
    assert store.vote(shown.id + 100, "alice", "left") is None
    with pytest.raises(DataError, match="not one of left, right, tie, both_bad"):
        store.vote(shown.id, "alice", "A")
    assert store.votes() == []


def test_concurrent_voters_lose_nothing(tmp_path):
    """8 threads vote 25 times each at once, each through its own connection and transaction."""
    store = VoteStore(tmp_path / "votes.sqlite")
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def voter(n: int) -> None:
        try:
            barrier.wait()
            for i in range(25):
                shown = _show(store, f"voter{n}", "x" if i % 2 else "y", "y" if i % 2 else "x")
                assert store.vote(shown.id, f"voter{n}", ("left", "right", "tie", "both_bad")[i % 4]) is not None
        except BaseException as err:  # surfaced below: a thread's assertion would be lost otherwise
            errors.append(err)

    threads = [threading.Thread(target=voter, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    votes = store.votes()
    assert len(votes) == 200 and len({v.id for v in votes}) == 200
    assert all(store.counts(f"voter{n}") == (25, 200) for n in range(8))
    counts = store.pair_counts("voter3")
    assert counts == {("p1", "x", "y"): (25, 200)}
