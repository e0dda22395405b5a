"""Server safety through the official openai client and httpx: token ids, request bounds,
client disconnects, body limits without Content-Length, and 500s that leak nothing."""

from __future__ import annotations

import logging
import re
import time

import httpx
import openai
import pytest

from tunelab.serve import ServerSettings, ServerThread, create_app

HELLO = [{"role": "user", "content": "hello, what is a list"}]


def metric(url: str, name: str, headers: dict | None = None) -> float:
    text = httpx.get(url + "/metrics", headers=headers or {}).text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return float(lines[name])


@pytest.fixture(scope="module")
def bounded(engine):
    """A server with small request bounds (and max_tokens up to nearly tiny's 1024 context)."""
    settings = ServerSettings(max_tokens_limit=1000, max_prompts=3, max_request_tokens=1000)
    with ServerThread(create_app(engine, settings)) as srv:
        yield srv


@pytest.fixture()
def bounded_client(bounded):
    return openai.OpenAI(base_url=f"{bounded.url}/v1", api_key="x", max_retries=0, timeout=120)


# --- token-id prompts ------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [[5, 512], [5, -1], [[4, 5], [6, 10**9]], [[7], [-3, 8]]])
def test_token_ids_outside_the_vocabulary_are_a_400_and_the_server_goes_on(client, engine, prompt):
    vocab = engine.model.get_input_embeddings().num_embeddings
    assert vocab == 512  # tiny: every id in 0..511 is a token
    bad = next(t for p in (prompt if isinstance(prompt[0], list) else [prompt]) for t in p if not 0 <= t < vocab)
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt=prompt, max_tokens=2, temperature=0)
    assert err.value.code == "invalid_value" and err.value.param == "prompt"
    assert f"token id {bad}" in err.value.message and "0..511" in err.value.message
    ok = client.completions.create(model="tiny", prompt=[5, vocab - 1], max_tokens=2, temperature=0)
    assert ok.usage.completion_tokens == 2 and ok.usage.prompt_tokens == 2


# --- bounds on one request -------------------------------------------------------------------


def test_prompts_per_request_are_bounded(bounded_client):
    with pytest.raises(openai.BadRequestError) as err:
        bounded_client.completions.create(model="tiny", prompt=["a", "b", "c", "d"], max_tokens=1)
    assert err.value.code == "too_many_prompts" and err.value.param == "prompt"
    assert "4 prompts" in err.value.message and "--max-prompts 3" in err.value.message
    ok = bounded_client.completions.create(model="tiny", prompt=[[5], [6], [7]], max_tokens=2, temperature=0)
    assert [c.index for c in ok.choices] == [0, 1, 2] and ok.usage.completion_tokens == 6


def test_total_tokens_requested_are_bounded(bounded_client):
    with pytest.raises(openai.BadRequestError) as err:
        bounded_client.completions.create(model="tiny", prompt=[[5], [6]], max_tokens=501)
    assert err.value.code == "too_many_tokens" and err.value.param == "max_tokens"
    assert "2 prompts x 501 max_tokens = 1002 tokens" in err.value.message
    assert "--max-request-tokens 1000" in err.value.message


def test_chat_without_max_tokens_defaults_within_the_request_bound(engine):
    settings = ServerSettings(max_tokens_limit=64, max_request_tokens=5)
    with ServerThread(create_app(engine, settings)) as srv:
        c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=120)
        reply = c.chat.completions.create(model="tiny", messages=HELLO, temperature=0)
        assert reply.usage.completion_tokens <= 5
        with pytest.raises(openai.BadRequestError, match="--max-request-tokens 5"):
            c.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6)


# --- a client that goes away -----------------------------------------------------------------


class Paced:
    """The engine, at no more than one decoding step per ``seconds``: how fast tiny runs differs
    ~10x between machines, so the test sets the pace instead of assuming one. The decoder asks
    ``cancel()`` once after every step, so that is where the pause goes."""

    def __init__(self, engine, seconds: float):
        self._engine, self._seconds = engine, seconds

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, *args, cancel=None, **kwargs):
        def paced_cancel() -> bool:
            time.sleep(self._seconds)
            return cancel is not None and cancel()

        return self._engine.stream(*args, cancel=paced_cancel, **kwargs)


def test_non_streaming_request_is_cancelled_when_the_client_disconnects(engine):
    """At >= 10 ms a step, 1000 greedy tokens take >= 10 s; the client leaves after 1 s, so the
    worker stops after at most (1 s + the cancel's latency) / 10 ms tokens: about 100."""
    settings = ServerSettings(max_tokens_limit=1000, max_request_tokens=1000)
    with ServerThread(create_app(Paced(engine, 0.01), settings)) as srv:
        body = {"model": "tiny", "prompt": "hello there", "max_tokens": 1000, "temperature": 0}
        with httpx.Client(timeout=httpx.Timeout(120, read=1.0)) as http, pytest.raises(httpx.ReadTimeout):
            http.post(srv.url + "/v1/completions", json=body)  # the client closes the connection
        deadline = time.monotonic() + 60
        while metric(srv.url, "tunelab_cancelled_total") < 1:
            assert time.monotonic() < deadline, "the generation was not cancelled"
            time.sleep(0.05)
        generated = metric(srv.url, "tunelab_completion_tokens_total")
        assert 0 < generated < 500  # stopped well before max_tokens=1000
        assert metric(srv.url, "tunelab_busy") == 0


# --- body size --------------------------------------------------------------------------------


def test_body_over_the_limit_is_413_with_or_without_content_length(server, api_key):
    auth = {"Authorization": f"Bearer {api_key}", "content-type": "application/json"}
    url = server.url + "/v1/chat/completions"
    big = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"x" * 30_000 + b'"}]}'

    def chunked(data: bytes):
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    with_length = httpx.post(url, content=big, headers=auth)
    without = httpx.post(url, content=chunked(big), headers=auth)
    assert "content-length" in with_length.request.headers
    assert without.request.headers["transfer-encoding"] == "chunked"
    for r in (with_length, without):
        assert r.status_code == 413
        assert r.json()["error"] == {"message": "request body over 20000 bytes", "type": "invalid_request_error",
                                     "param": None, "code": "request_too_large"}
    small = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
    ok = httpx.post(url, content=chunked(small), headers=auth, timeout=120)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 2


# --- 500s -------------------------------------------------------------------------------------

SECRET = "secret-detail /home/alice/weights.bin"


class Failing:
    """The engine, but scoring (inside the worker job) and encoding (in the route) fail."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def logprobs(self, *args, **kwargs):
        raise RuntimeError(SECRET)

    def encode(self, text):
        raise KeyError(SECRET)


def test_500_bodies_carry_a_request_id_not_the_exception(engine, caplog):
    caplog.set_level(logging.ERROR, logger="tunelab.serve")
    with ServerThread(create_app(Failing(engine))) as srv:
        url = srv.url + "/v1/completions"
        in_job = httpx.post(url, json={"model": "tiny", "prompt": [5, 6], "max_tokens": 1, "logprobs": 0}, timeout=120)
        in_route = httpx.post(url, json={"model": "tiny", "prompt": "hi", "max_tokens": 1}, timeout=120)
        c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=120)
        with pytest.raises(openai.InternalServerError) as err:
            c.completions.create(model="tiny", prompt=[5, 6], max_tokens=1, logprobs=0)
    assert err.value.code == "internal_error"
    for r in (in_job, in_route):
        assert r.status_code == 500
        error = r.json()["error"]
        assert "secret" not in r.text and "RuntimeError" not in r.text and "KeyError" not in r.text
        assert error["type"] == "server_error" and error["code"] == "internal_error"
        rid = re.fullmatch(r"internal error \(request id (req-[0-9a-f]{24})\)", error["message"]).group(1)
        assert r.headers["x-request-id"] == rid
        logged = [rec for rec in caplog.records if rid in rec.getMessage()]
        assert logged and SECRET in "".join(logging.Formatter().formatException(rec.exc_info) for rec in logged)
