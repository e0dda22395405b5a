"""The official openai client against a live tunelab server on tiny."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

from tunelab.infer import SamplingParams, generate_batch
from tunelab.serve import ServerSettings, ServerThread, create_app

HELLO = [{"role": "user", "content": "hello, what is a list"}]


def hf_greedy(engine, model_id: str, messages, n: int) -> str:
    """Reference answer from transformers' own generate under the same adapter."""
    from tunelab.infer import ChatMessage

    prompt = engine.encode_chat([ChatMessage(m["role"], m["content"]) for m in messages])
    with engine.use(model_id):
        out = engine.model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                                    pad_token_id=engine.tokenizer.pad_token_id)
    new = out[0, len(prompt) :].tolist()
    return engine.tokenizer.decode([t for t in new if t not in engine.generator.eos], skip_special_tokens=True)


def test_models_lists_base_and_adapter(client):
    assert sorted(m.id for m in client.models.list()) == ["lora", "tiny"]
    assert client.models.retrieve("lora").id == "lora"


@pytest.mark.parametrize("model_id", ["tiny", "lora"])
def test_chat_is_greedy_generate_of_that_adapter(client, engine, model_id):
    reply = client.chat.completions.create(model=model_id, messages=HELLO, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == hf_greedy(engine, model_id, HELLO, 8)
    assert reply.choices[0].finish_reason in ("length", "stop")
    assert reply.usage.completion_tokens == 8 or reply.choices[0].finish_reason == "stop"


def test_adapter_changes_the_answer(engine):
    assert hf_greedy(engine, "tiny", HELLO, 8) != hf_greedy(engine, "lora", HELLO, 8)


def test_streaming_equals_non_streaming_and_ends_with_done(client, server, api_key):
    kwargs = dict(model="lora", messages=HELLO, max_tokens=8, temperature=0)
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")
    assert chunks[-1].usage.completion_tokens > 0
    body = {**kwargs, "stream": True}
    raw = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"},
                     timeout=120).text
    assert raw.rstrip().endswith("data: [DONE]") and raw.startswith("data: {")


def test_completion_echo_logprobs_are_the_model_log_softmax(client, engine):
    """What lm-evaluation-harness sends to score a continuation: echo, max_tokens=0, logprobs."""
    prompt = "the answer is a list"
    reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=0, echo=True, logprobs=2, temperature=0)
    choice = reply.choices[0]
    assert choice.text == prompt
    ids = engine.encode(prompt)
    with engine.use("tiny"), torch.no_grad():
        logp = torch.log_softmax(engine.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    expected = [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
    assert choice.logprobs.token_logprobs[0] is None
    assert choice.logprobs.token_logprobs[1:] == pytest.approx(expected, abs=1e-4)
    assert "".join(choice.logprobs.tokens) == prompt
    best = max(choice.logprobs.top_logprobs[1].values())
    assert best == pytest.approx(logp[0].max().item(), abs=1e-4)


def test_completion_generates_like_chat_and_takes_token_prompts(client, engine):
    ids = engine.encode("hello there")
    by_text = client.completions.create(model="tiny", prompt="hello there", max_tokens=6, temperature=0)
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=6, temperature=0, logprobs=0)
    assert by_text.choices[0].text == by_ids.choices[0].text
    assert len(by_ids.choices[0].logprobs.tokens) == by_ids.usage.completion_tokens


def test_errors_raise_the_matching_client_exception(client, server):
    with pytest.raises(openai.BadRequestError, match="unknown field 'bogus'"):
        client.chat.completions.create(model="tiny", messages=HELLO, extra_body={"bogus": 1})
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=65)
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt=list(range(4, 1030)), max_tokens=1)
    assert err.value.code == "context_length_exceeded" and err.value.status_code == 400
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-17", messages=HELLO)
    assert err.value.code == "model_not_found"
    bad_key = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()
    big = [{"role": "user", "content": "x" * 30_000}]
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="tiny", messages=big)
    assert err.value.status_code == 413


def test_every_route_but_health_needs_the_key(server, api_key):
    routes = [("GET", "/v1/models"), ("GET", "/v1/models/tiny"), ("GET", "/metrics"),
              ("POST", "/v1/chat/completions"), ("POST", "/v1/completions")]
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            r = httpx.request(method, server.url + path, json={}, headers=headers)
            assert r.status_code == 401, path
            assert r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/health").status_code == 200
    ok = httpx.get(server.url + "/v1/models", headers={"x-api-key": api_key})
    assert ok.status_code == 200


def test_metrics_count_requests_and_tokens(client, server, api_key):
    client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3, temperature=0)
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {api_key}"}).text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert int(lines['tunelab_requests_total{route="/v1/chat/completions",status="200"}']) >= 1
    assert int(lines["tunelab_completion_tokens_total"]) >= 3
    assert lines["tunelab_queue_depth"] == "0"
    assert int(lines["tunelab_time_to_first_token_seconds_count"]) >= 1


def test_100_requests_at_concurrency_8_are_all_answered_unmixed(client, engine):
    """Seeded sampling on a near-uniform tiny model: every answer is distinct, so a mix-up shows."""
    from tunelab.infer import ChatMessage

    texts = [f"request number {i}" for i in range(100)]
    prompts = [engine.encode_chat([ChatMessage("user", t)]) for t in texts]
    with engine.use("tiny"):
        expected = [r.text for r in generate_batch(engine.model, engine.tokenizer, prompts,
                                                   SamplingParams(max_new_tokens=2, temperature=1.0, seed=0))]
    assert len(set(expected)) >= 90

    def ask(i: int) -> str:
        messages = [{"role": "user", "content": texts[i]}]
        reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=2, temperature=1.0, seed=i)
        return reply.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(100)))
    assert answers == expected


class Gated:
    """The engine behind a gate: the first generation blocks until released (fills the queue)."""

    def __init__(self, engine, fail_mid_stream: bool = False):
        self._engine = engine
        self.entered, self.release = threading.Event(), threading.Event()
        self.fail_mid_stream = fail_mid_stream

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, *args, **kwargs):
        self.entered.set()
        self.release.wait(60)
        inner = self._engine.stream(*args, **kwargs)
        return Broken(inner) if self.fail_mid_stream else inner


class Broken:
    """A stream that fails after its first delta."""

    def __init__(self, inner):
        self.inner, self.result = inner, None

    def __iter__(self):
        it = iter(self.inner)
        yield next(it)
        self.inner.close()
        raise RuntimeError("device lost")

    def close(self):
        self.inner.close()


def test_full_queue_answers_429(engine):
    gated = Gated(engine)
    app = create_app(gated, ServerSettings(max_queue=1))
    with ServerThread(app) as srv:
        c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=120)
        ask = lambda: c.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, temperature=0)  # noqa: E731
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(ask)
            assert gated.entered.wait(30)
            waiting = pool.submit(ask)
            while app.state.worker.queue_depth < 1:
                threading.Event().wait(0.01)
            with pytest.raises(openai.RateLimitError) as err:
                ask()
            assert err.value.code == "queue_full"
            gated.release.set()
            assert running.result().choices[0].message.content == waiting.result().choices[0].message.content


def test_error_after_streaming_started_is_an_error_event(engine):
    gated = Gated(engine, fail_mid_stream=True)
    gated.release.set()
    with ServerThread(create_app(gated)) as srv:
        c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=120)
        stream = c.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, temperature=0, stream=True)
        with pytest.raises(openai.APIError, match=r"^internal error \(request id req-[0-9a-f]{24}\)$") as err:
            for _ in stream:
                pass
    assert "device lost" not in err.value.message  # logged server-side, never sent
