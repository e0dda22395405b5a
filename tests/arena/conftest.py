"""Arena fixtures: an answers folder for the vote page, a scripted OpenAI-compatible judge server."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest

from tunelab.evaluate.arena.run import Answer

PROMPTS = {"p1": "Name a primary colour.", "p2": "What is 2 + 2?\nAnswer briefly."}
ANSWERS = {  # model -> prompt id -> answer (newlines on purpose: the page must keep them)
    "alpha": {"p1": "Red.", "p2": "4"},
    "beta": {"p1": "Blue is one.\nRed and yellow are the others.", "p2": "Four.\n\n2 + 2 = 4"},
    "gamma": {"p1": "Colours are nice.", "p2": "I am not sure."},
}


def answer_rows() -> list[Answer]:
    return [
        Answer(m, f"key-{m}", pid, PROMPTS[pid], None, text, {"max_new_tokens": 32})
        for m, by_prompt in ANSWERS.items()
        for pid, text in by_prompt.items()
    ]


@pytest.fixture()
def arena_dir(tmp_path) -> Path:
    folder = tmp_path / "arena"
    folder.mkdir()
    (folder / "answers.jsonl").write_text("".join(json.dumps(asdict(a)) + "\n" for a in answer_rows()))
    return folder


def scripted_judge_app(rule: str):
    """An OpenAI-compatible ``/v1/chat/completions`` whose model answers by a fixed rule.

    ``first``: always ``[[A]]`` (the most position-biased judge possible). ``content``: the
    answer that contains the word ``good`` wins, wherever it is shown (an unbiased judge).
    """
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": f"judge-{rule}", "object": "model"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict) -> dict:
        text = body["messages"][-1]["content"]
        first = re.search(r"\[Answer A\]\n(.*?)\n\[End of answer A\]", text, re.S).group(1)
        second = re.search(r"\[Answer B\]\n(.*?)\n\[End of answer B\]", text, re.S).group(1)
        if rule == "first":
            reply = "[[A]]"
        elif ("good" in first) == ("good" in second):
            reply = "They are equal. [[C]]"
        else:
            reply = "[[A]]" if "good" in first else "B is better: [[B]]"
        return {
            "id": "x",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        }

    return app


@pytest.fixture()
def judge_server():
    from tunelab.serve import ServerThread

    servers = []

    def start(rule: str) -> str:
        server = ServerThread(scripted_judge_app(rule)).__enter__()
        servers.append(server)
        return f"{server.url}/v1#judge-{rule}"

    yield start
    for server in servers:
        server.stop()
