"""The evaluation cache: answers and grades keyed by everything that determines them.

Why: a suite is re-run after every fine-tune, and most of it has not changed (the base model's
answers, the cases nobody edited). An answer is keyed by the model's key (which changes with its
weights, :mod:`tunelab.evaluate.models`), the exact conversation and the generation settings
(plus the sample's seed when sampling), so a re-run generates only what changed and a fully
cached re-run loads no model. Grades (a reward, a judge's reply) are keyed the same way by the
grading model and what it graded.

One SQLite file under ``$TUNELAB_HOME/eval-cache/`` in WAL mode (two evaluations at once are
fine); values are JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tunelab.paths import tunelab_home

SCHEMA_VERSION = 1


def cache_key(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (dict keys sorted)."""
    text = json.dumps([SCHEMA_VERSION, *parts], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def default_cache_path() -> Path:
    """``$TUNELAB_EVAL_CACHE`` (a file), else ``$TUNELAB_HOME/eval-cache/cache.sqlite``."""
    if os.environ.get("TUNELAB_EVAL_CACHE"):
        return Path(os.environ["TUNELAB_EVAL_CACHE"]).expanduser()
    folder = tunelab_home() / "eval-cache"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "cache.sqlite"


class EvalCache:
    """``key → JSON value`` in SQLite; ``get_many`` / ``put_many`` so a suite costs two queries."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL, "
            "created REAL NOT NULL)"
        )
        self.db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self.db.execute(f"SELECT key, value FROM entries WHERE key IN ({marks})", chunk):
                found[key] = json.loads(value)
        return found

    def put_many(self, kind: str, values: Mapping[str, Any]) -> None:
        now = time.time()
        rows = [(key, kind, json.dumps(value, ensure_ascii=False), now) for key, value in values.items()]
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO entries (key, kind, value, created) VALUES (?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def close(self) -> None:
        self.db.close()


class NoCache(EvalCache):
    """``--no-cache``: nothing is read or written."""

    def __init__(self):  # noqa: D107 - no file
        self.path = None

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return {}

    def put_many(self, kind: str, values: Mapping[str, Any]) -> None:
        return None

    def __len__(self) -> int:
        return 0

    def close(self) -> None:
        return None
