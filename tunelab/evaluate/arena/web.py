"""``tunelab arena serve``: the human-evaluation page (FastAPI; plain HTML, CSS and JS, no external assets).

A voter sees a prompt and two anonymous answers in random order (Chatbot Arena's blind pairwise
vote, Chiang et al. 2024, arXiv:2403.04132), votes A better / B better / tie / both bad with a
button or a key, and only then learns which model wrote which answer. The next pair is the one
this voter has seen least, then the one with the fewest votes overall, so votes spread over
every pair. The leaderboard page rates the votes with the arena's Bradley–Terry fit.

Routes: ``GET /`` (vote page), ``GET /leaderboard``, ``GET /static/{file}``, ``GET /api/next``,
``POST /api/vote`` (``{"id": shown_id, "verdict": "left"|"right"|"tie"|"both_bad"}``),
``GET /api/leaderboard``, ``GET /health``. The voter id is a random cookie.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import asdict
from importlib import resources
from itertools import combinations
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from tunelab.evaluate.arena.judges import battles_from, judge_report, vote_judgment
from tunelab.evaluate.arena.ratings import leaderboard, models_of, win_rates
from tunelab.evaluate.arena.run import Answer, read_answers
from tunelab.evaluate.arena.store import VOTE_CHOICES, VoteStore

COOKIE = "tunelab_voter"
STATIC = {
    "index.html": "text/html",
    "leaderboard.html": "text/html",
    "app.js": "text/javascript",
    "leaderboard.js": "text/javascript",
    "style.css": "text/css",
}


def _static(name: str) -> str:
    return resources.files("tunelab.evaluate.arena").joinpath("static", name).read_text(encoding="utf-8")


class PairPicker:
    """The pairs of an arena folder's answers and the choice of the next one for a voter."""

    def __init__(self, answers: list[Answer], seed: int | None = None):
        by_prompt: dict[str, list[Answer]] = {}
        for a in answers:
            by_prompt.setdefault(a.prompt_id, []).append(a)
        self.pairs = [
            tuple(sorted((x, y), key=lambda a: a.model))
            for rows in by_prompt.values()
            for x, y in combinations(rows, 2)
        ]
        self.models = sorted({a.model for a in answers})
        self.rng = random.Random(seed)

    def pick(self, counts: dict[tuple[str, str, str], tuple[int, int]]) -> tuple[Answer, Answer] | None:
        """The least-seen pair (by this voter, then by everyone), sides in random order."""
        if not self.pairs:
            return None

        def seen(pair: tuple[Answer, Answer]) -> tuple[int, int]:
            return counts.get((pair[0].prompt_id, pair[0].model, pair[1].model), (0, 0))

        least = min(seen(p) for p in self.pairs)
        left, right = self.rng.choice([p for p in self.pairs if seen(p) == least])
        return (right, left) if self.rng.random() < 0.5 else (left, right)


class VoteIn(BaseModel):
    """The body of ``POST /api/vote``."""

    id: int
    verdict: str


def create_app(store: VoteStore, answers: list[Answer], *, rounds: int = 300, seed: int | None = None):
    """The vote page's app over ``store``, showing pairs of ``answers``."""
    app = FastAPI(title="tunelab arena", docs_url=None, redoc_url=None, openapi_url=None)
    picker = PairPicker(answers, seed)

    def voter_of(request: Request, response: Response | None = None) -> str:
        voter = request.cookies.get(COOKIE)
        if voter:
            return voter
        if response is None:
            raise HTTPException(400, "no voter cookie: open the vote page first")
        voter = uuid.uuid4().hex
        response.set_cookie(COOKIE, voter, max_age=365 * 24 * 3600, httponly=True, samesite="lax")
        return voter

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return _static("index.html")

    @app.get("/leaderboard", response_class=HTMLResponse)
    def leaderboard_page() -> str:
        return _static("leaderboard.html")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        return Response(_static(name), media_type=STATIC[name])

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/next")
    def next_pair(request: Request, response: Response) -> dict:
        voter = voter_of(request, response)
        you, total = store.counts(voter)
        picked = picker.pick(store.pair_counts(voter))
        if picked is None:
            return {"id": None, "you": you, "total": total}
        left, right = picked
        shown = store.show(
            voter, left.prompt_id, left.prompt, left.system, (left.model, left.answer), (right.model, right.answer)
        )
        return {
            "id": shown.id,
            "prompt": shown.prompt,
            "system": shown.system,
            "left": shown.answer_left,
            "right": shown.answer_right,
            "you": you,
            "total": total,
        }

    @app.post("/api/vote")
    def vote(body: VoteIn, request: Request) -> dict:
        if body.verdict not in VOTE_CHOICES:
            raise HTTPException(422, f"verdict must be one of {', '.join(VOTE_CHOICES)}")
        voter = voter_of(request)
        stored = store.vote(body.id, voter, body.verdict)
        if stored is None:
            raise HTTPException(404, "this pair was not shown to you; load the next one")
        you, total = store.counts(voter)
        return {
            "verdict": stored.verdict,
            "left_model": stored.model_left,
            "right_model": stored.model_right,
            "you": you,
            "total": total,
        }

    @app.get("/api/leaderboard")
    def leaderboard_api() -> JSONResponse:
        judgments = [vote_judgment(v, "human") for v in store.votes()]
        battles = battles_from(judgments, per_vote=True)
        report = judge_report("human", judgments)
        models = models_of(battles, picker.models)
        ratings = leaderboard(battles, models, rounds=rounds, seed=0)
        rates = win_rates(battles, models)

        def clean(x: float) -> float | None:
            return None if x != x else round(x, 4)  # NaN (no battles) → null

        return JSONResponse(
            {
                "votes": len(battles),
                "ratings": [
                    {k: clean(v) if isinstance(v, float) else v for k, v in asdict(r).items()} for r in ratings
                ],
                "models": models,
                "win_rates": [[clean(float(x)) for x in row] for row in rates],
                "voters": {  # the voters as a judge: position bias of the page
                    "position_consistency": report.position_consistency,
                    "pairs_both_orders": report.pairs_both_orders,
                    "first_slot_win_rate": report.first_slot_win_rate,
                    "tie_rate": report.tie_rate,
                    "line": report.line(),
                },
            }
        )

    return app


def serve_app(folder: str | Path | None, db: str | Path, *, host: str, port: int, seed: int | None = None):
    """The app for ``tunelab arena serve``: pairs from ``folder/answers.jsonl`` (none without a folder)."""
    answers = read_answers(Path(folder) / "answers.jsonl") if folder else []
    return create_app(VoteStore(db), answers, seed=seed)
