"""The vote page in headless Chromium (Playwright): click a button, press a key, see the leaderboard move.

Needs ``playwright`` (the ``test`` extra) and a Chromium binary: Debian's ``chromium`` package
(``.ci/run`` installs it); no ``playwright install`` download. Set ``TUNELAB_SCREENSHOTS=DIR`` to
keep screenshots of the pages.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.arena.conftest import ANSWERS, answer_rows
from tunelab.evaluate.arena.store import VoteStore
from tunelab.evaluate.arena.web import create_app

CHROMIUM = os.environ.get("TUNELAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture()
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        yield page
        browser.close()


def _shot(page, tmp_path: Path, name: str) -> None:
    folder = Path(os.environ.get("TUNELAB_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    assert (folder / f"{name}.png").stat().st_size > 10_000  # a rendered page, not a blank one


def test_vote_page_in_chromium(browser_page, tmp_path):
    from tunelab.serve import ServerThread

    page = browser_page
    store = VoteStore(tmp_path / "votes.sqlite")
    with ServerThread(create_app(store, answer_rows(), rounds=50, seed=3)) as server:
        page.goto(f"{server.url}/leaderboard")
        page.wait_for_selector("#board tbody tr")
        assert page.inner_text("#total") == "0 votes"
        before = page.inner_text("#board tbody")

        page.goto(server.url)
        page.wait_for_function("document.getElementById('vote-left').disabled === false")
        left, right = page.inner_text("#left"), page.inner_text("#right")
        texts = {t for by_prompt in ANSWERS.values() for t in by_prompt.values()}
        assert left in texts and right in texts  # newlines kept (pre-wrap): multi-line answers match exactly
        assert page.inner_text("#model-left") == ""  # anonymous until the vote
        _shot(page, tmp_path, "vote-page")

        page.click("#vote-left")  # a button
        page.wait_for_selector("#status.saved")
        status = page.inner_text("#status")
        (vote,) = store.votes()
        assert vote.verdict == "left" and vote.answer_left == left
        assert status == f"Vote saved: A is better. A was {vote.model_left}, B was {vote.model_right}."
        assert page.inner_text("#counts") == "your votes: 1 · all votes: 1"
        _shot(page, tmp_path, "vote-saved")

        page.keyboard.press("Enter")  # next pair
        page.wait_for_function("document.getElementById('vote-left').disabled === false")
        second_right = page.inner_text("#right")
        page.keyboard.press("2")  # a key: B is better
        page.wait_for_selector("#status.saved")
        votes = store.votes()
        assert [v.verdict for v in votes] == ["left", "right"]
        assert votes[1].answer_right == second_right and votes[0].voter == votes[1].voter

        page.goto(f"{server.url}/leaderboard")
        page.wait_for_function("document.getElementById('total').textContent === '2 votes'")
        after = page.inner_text("#board tbody")
        assert after != before
        winners = {votes[0].model_left, votes[1].model_right}
        top = page.inner_text("#board tbody tr:first-child td.name")
        assert top in winners
        # one vote for the left answer, one for the right: no position bias shown
        assert "the answer shown as A won 50% of decisive votes" in page.inner_text("#voters")
        _shot(page, tmp_path, "leaderboard")
