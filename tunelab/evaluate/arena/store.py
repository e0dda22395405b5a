"""The vote store of the human-evaluation page: SQLite in WAL mode, one transaction per vote.

Two tables. ``shown`` records every pair a voter was shown (prompt, both answers, which model
was on the left), so the page never tells the browser which model wrote which answer and a
vote only names the ``shown`` row it is about. ``votes`` holds at most one vote per shown row
(``UNIQUE``), with the voter id (a cookie) and the time. Every row carries the texts, so the
votes alone are a dataset (:func:`preference_rows`) even after the arena folder is gone.

Why a vote is never lost:

* WAL journal (readers never block the writer) with ``synchronous=FULL``: a committed vote
  survives a crash or a power cut, not only a clean restart.
* ``busy_timeout``: a second writer waits for the lock instead of failing with
  "database is locked", so two voters at once both get in.
* one short ``BEGIN IMMEDIATE`` transaction per vote on a connection of its own (sqlite3
  connections are not shared between the server's threads).

The schema evolves by ordered migrations recorded in ``_migrations`` (the pattern of
simonw/llm's ``migrations.py``): opening an older database applies the missing ones.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import DataError

BUSY_TIMEOUT_MS = 10_000
VOTE_CHOICES = ("left", "right", "tie", "both_bad")

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_shown_and_votes",
        """
        CREATE TABLE shown (
            id INTEGER PRIMARY KEY,
            voter TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            prompt TEXT NOT NULL,
            system TEXT,
            model_left TEXT NOT NULL,
            model_right TEXT NOT NULL,
            answer_left TEXT NOT NULL,
            answer_right TEXT NOT NULL,
            created REAL NOT NULL
        );
        CREATE TABLE votes (
            id INTEGER PRIMARY KEY,
            shown_id INTEGER NOT NULL UNIQUE REFERENCES shown(id),
            voter TEXT NOT NULL,
            verdict TEXT NOT NULL CHECK (verdict IN ('left', 'right', 'tie', 'both_bad')),
            created REAL NOT NULL
        );
        CREATE INDEX votes_voter ON votes(voter);
    """,
    ),
]


@dataclass(frozen=True)
class Vote:
    """One vote joined with what the voter was shown."""

    id: int
    voter: str
    created: float
    prompt_id: str
    prompt: str
    system: str | None
    model_left: str
    model_right: str
    answer_left: str
    answer_right: str
    verdict: str


@dataclass(frozen=True)
class Shown:
    """A pair as the page shows it: no model names until the vote is in."""

    id: int
    prompt_id: str
    prompt: str
    system: str | None
    answer_left: str
    answer_right: str


class VoteStore:
    """Votes in one SQLite file; safe to use from many threads and processes at once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise DataError(
                    f"{self.path}: SQLite refused WAL mode (got {mode})\n"
                    "  fix: put the vote database on a local disk, not a network share"
                )
            self._migrate(db)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection in autocommit mode (transactions are explicit), closed afterwards."""
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as err:
            raise DataError(f"{self.path}: cannot open the vote database: {err}\n  fix: check the path") from err
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
            done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
            for name, sql in MIGRATIONS:
                if name not in done:
                    for statement in filter(str.strip, sql.split(";")):
                        db.execute(statement)
                    db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def show(
        self, voter: str, prompt_id: str, prompt: str, system: str | None, left: tuple[str, str], right: tuple[str, str]
    ) -> Shown:
        """Record that ``voter`` is shown ``left = (model, answer)`` beside ``right``."""
        with self.connect() as db:
            cur = db.execute(
                "INSERT INTO shown (voter, prompt_id, prompt, system, model_left, model_right, answer_left, "
                "answer_right, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (voter, prompt_id, prompt, system, left[0], right[0], left[1], right[1], time.time()),
            )
            return Shown(cur.lastrowid, prompt_id, prompt, system, left[1], right[1])

    def vote(self, shown_id: int, voter: str, verdict: str) -> Vote | None:
        """Store a vote in one transaction; ``None`` if ``shown_id`` was not shown to ``voter``.

        A second vote on the same shown pair (a double click) keeps the first and returns it.
        """
        if verdict not in VOTE_CHOICES:
            raise DataError(f"vote {verdict!r}: not one of {', '.join(VOTE_CHOICES)}\n  fix: send one of those")
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT OR IGNORE INTO votes (shown_id, voter, verdict, created) "
                    "SELECT id, voter, ?, ? FROM shown WHERE id = ? AND voter = ?",
                    (verdict, time.time(), shown_id, voter),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            rows = self._votes(db, "WHERE s.id = ? AND s.voter = ?", (shown_id, voter))
        return rows[0] if rows else None

    @staticmethod
    def _votes(db: sqlite3.Connection, where: str = "", args: tuple = ()) -> list[Vote]:
        rows = db.execute(
            "SELECT v.id, v.voter, v.created, s.prompt_id, s.prompt, s.system, s.model_left, s.model_right, "
            f"s.answer_left, s.answer_right, v.verdict FROM votes v JOIN shown s ON s.id = v.shown_id {where} "
            "ORDER BY v.id",
            args,
        ).fetchall()
        return [Vote(*row) for row in rows]

    def votes(self) -> list[Vote]:
        """Every vote, oldest first."""
        with self.connect() as db:
            return self._votes(db)

    def pair_counts(self, voter: str) -> dict[tuple[str, str, str], tuple[int, int]]:
        """``(prompt_id, model, model) → (votes by voter, votes by anyone)``; models sorted."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT s.prompt_id, min(s.model_left, s.model_right), max(s.model_left, s.model_right), "
                "sum(v.voter = ?), count(*) FROM votes v JOIN shown s ON s.id = v.shown_id GROUP BY 1, 2, 3",
                (voter,),
            ).fetchall()
        return {(p, a, b): (mine, total) for p, a, b, mine, total in rows}

    def counts(self, voter: str) -> tuple[int, int]:
        """``(votes by voter, votes in total)``."""
        with self.connect() as db:
            return db.execute("SELECT coalesce(sum(voter = ?), 0), count(*) FROM votes", (voter,)).fetchone()
