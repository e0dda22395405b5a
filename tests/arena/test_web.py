"""The vote page's HTTP API on a live server: anonymous pairs, cookies, votes, the leaderboard."""

from __future__ import annotations

import httpx
import pytest

from tests.arena.conftest import ANSWERS, answer_rows
from tunelab.evaluate.arena.store import VoteStore
from tunelab.evaluate.arena.web import PairPicker, create_app


@pytest.fixture()
def live(tmp_path):
    from tunelab.serve import ServerThread

    store = VoteStore(tmp_path / "votes.sqlite")
    with ServerThread(create_app(store, answer_rows(), rounds=50, seed=0)) as server:
        yield server.url, store


def test_pair_is_anonymous_until_the_vote(live):
    url, store = live
    with httpx.Client(base_url=url) as client:
        page = client.get("/")
        assert page.status_code == 200 and "A is better" in page.text and "<kbd>1</kbd>" in page.text
        pair = client.get("/api/next").json()
        assert client.cookies.get("tunelab_voter")
        assert not any(m in str(pair) for m in ANSWERS)  # no model name reaches the browser before the vote
        texts = {t for by_prompt in ANSWERS.values() for t in by_prompt.values()}
        assert pair["left"] in texts and pair["right"] in texts and pair["left"] != pair["right"]
        result = client.post("/api/vote", json={"id": pair["id"], "verdict": "left"}).json()
        assert ANSWERS[result["left_model"]][_pid(pair)] == pair["left"]
        assert ANSWERS[result["right_model"]][_pid(pair)] == pair["right"]
        assert (result["you"], result["total"]) == (1, 1)
        (vote,) = store.votes()
        assert vote.verdict == "left" and vote.voter == client.cookies.get("tunelab_voter")


def _pid(pair: dict) -> str:
    return "p1" if "colour" in pair["prompt"] else "p2"


def test_votes_need_cookie_and_own_pair(live):
    url, _ = live
    with httpx.Client(base_url=url) as alice, httpx.Client(base_url=url) as bob:
        pair = alice.get("/api/next").json()
        assert httpx.post(f"{url}/api/vote", json={"id": pair["id"], "verdict": "left"}).status_code == 400
        bob.get("/api/next")
        assert bob.post("/api/vote", json={"id": pair["id"], "verdict": "left"}).status_code == 404
        assert alice.post("/api/vote", json={"id": pair["id"], "verdict": "best"}).status_code == 422
        assert alice.get("/static/../store.py").status_code == 404


def test_leaderboard_moves_with_votes(live):
    url, _ = live
    with httpx.Client(base_url=url) as client:
        before = client.get("/api/leaderboard").json()
        assert before["votes"] == 0 and {r["bt"] for r in before["ratings"]} == {1000.0}
        for _ in range(6):  # beta's answer wins wherever it is shown; a pair without beta is "both bad"
            pair = client.get("/api/next").json()
            beta = ANSWERS["beta"].values()
            verdict = "left" if pair["left"] in beta else ("right" if pair["right"] in beta else "both_bad")
            assert client.post("/api/vote", json={"id": pair["id"], "verdict": verdict}).status_code == 200
        board = client.get("/api/leaderboard").json()
    assert board["votes"] == 6
    assert board["ratings"][0]["model"] == "beta" and board["ratings"][0]["bt"] > 1000
    assert board["models"] == ["alpha", "beta", "gamma"]
    assert board["voters"]["tie_rate"] == pytest.approx(2 / 6)  # the two pairs without beta: both bad
    assert "first-slot win rate" in board["voters"]["line"]


def test_picker_spreads_votes_over_pairs():
    picker = PairPicker(answer_rows(), seed=1)
    assert len(picker.pairs) == 6  # 2 prompts x 3 model pairs
    counts: dict = {}
    seen = []
    for _ in range(6):  # with counts kept up to date, six picks visit all six pairs once
        left, right = picker.pick(counts)
        key = (left.prompt_id, *sorted((left.model, right.model)))
        seen.append(key)
        counts[key] = (1, 1)
    assert len(set(seen)) == 6


def test_concurrent_voters_over_http_and_restart(tmp_path):
    """4 browsers vote at once through the server's thread pool; a restarted server has every vote."""
    import threading

    from tunelab.serve import ServerThread

    db = tmp_path / "votes.sqlite"
    errors: list[BaseException] = []

    def voter(url: str) -> None:
        try:
            with httpx.Client(base_url=url) as client:
                for i in range(10):
                    pair = client.get("/api/next").json()
                    verdict = ("left", "right", "tie", "both_bad")[i % 4]
                    assert client.post("/api/vote", json={"id": pair["id"], "verdict": verdict}).status_code == 200
        except BaseException as err:  # surfaced below
            errors.append(err)

    with ServerThread(create_app(VoteStore(db), answer_rows(), rounds=20)) as server:
        threads = [threading.Thread(target=voter, args=(server.url,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    with ServerThread(create_app(VoteStore(db), answer_rows(), rounds=20)) as server:  # a restart
        board = httpx.get(f"{server.url}/api/leaderboard").json()
    assert board["votes"] == 40
    assert sum(r["battles"] for r in board["ratings"]) == 80  # each vote is a battle of two models
    assert len({v.voter for v in VoteStore(db).votes()}) == 4
