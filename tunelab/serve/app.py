"""The OpenAI-compatible HTTP API (FastAPI). Transport only: the generator is injected.

Routes: ``GET /health``, ``GET /metrics``, ``GET /v1/models``, ``POST /v1/chat/completions``,
``POST /v1/completions``. Model access is serialised by one :class:`Worker` thread behind a
bounded queue; streaming uses server-sent events ending in ``data: [DONE]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from tunelab.serve.backend import Backend
from tunelab.serve.errors import APIError, install_error_handlers
from tunelab.serve.guardrails import Guardrail
from tunelab.serve.jobs import (
    Generated,
    Limits,
    as_api_error,
    check_input,
    check_model,
    generation_job,
    max_new_tokens,
    sampling_params,
)
from tunelab.serve.metrics import Metrics
from tunelab.serve.middleware import ApiKeyMiddleware, BodyLimitMiddleware
from tunelab.serve.responses import chat_chunk, chat_completion, completion, completion_chunk, usage
from tunelab.serve.schemas import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList, new_id
from tunelab.serve.worker import JobHandle, QueueFull, Worker


@dataclass(frozen=True)
class ServerSettings:
    """Server limits and security settings (the ``tunelab serve`` flags)."""

    api_key: str | None = None
    max_queue: int = 64
    max_tokens_limit: int = 4096
    max_body_bytes: int = 1_000_000


def sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def create_app(backend: Backend, settings: ServerSettings | None = None,
               guardrails: Sequence[Guardrail] = ()) -> FastAPI:
    """Build the app around ``backend``; the worker thread stops when the app shuts down."""
    settings = settings or ServerSettings()
    worker = Worker(settings.max_queue)
    metrics = Metrics(lambda: worker.queue_depth, lambda: worker.busy)
    limits = Limits(settings.max_tokens_limit, backend.max_context)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.close()  # uvicorn has already waited for in-flight responses

    app = FastAPI(title="tunelab", lifespan=lifespan)
    app.state.worker, app.state.metrics = worker, metrics
    install_error_handlers(app)

    def submit(job) -> JobHandle:
        try:
            return worker.submit(job)
        except QueueFull as err:
            raise APIError(429, f"the server queue is full ({settings.max_queue} waiting); retry shortly",
                           code="queue_full") from err

    async def collect(handle: JobHandle) -> list[Generated]:
        try:
            return [ev async for ev in handle if isinstance(ev, Generated)]
        except Exception as err:  # noqa: BLE001 - reported as an OpenAI error object
            raise as_api_error(err) from err

    def record(done: Sequence[Generated]) -> None:
        for g in done:
            ttft = g.result.timings.time_to_first_token if g.result.tokens else None
            metrics.record_tokens(g.prompt_tokens, len(g.result.tokens), ttft)

    async def stream_events(
        handle: JobHandle, make_chunk, first: dict | None, include_usage: bool
    ) -> AsyncIterator[str]:
        done: list[Generated] = []
        try:
            if first is not None:
                yield sse(first)
            async for ev in handle:
                if isinstance(ev, Generated):
                    done.append(ev)
                    yield sse(make_chunk(None, ev.finish_reason))
                else:
                    yield sse(make_chunk(ev[1], None))
            if include_usage:
                yield sse(make_chunk(None, None) | {"choices": [], "usage": usage(done).model_dump()})
        except Exception as err:  # noqa: BLE001 - after the headers, errors travel as an event
            yield sse(as_api_error(err).body())
        finally:
            handle.cancelled.set()  # a client that went away stops its generation
            record(done)
        yield sse("[DONE]")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": backend.model_ids(), "queue_depth": worker.queue_depth}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_route() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=m) for m in backend.model_ids()])

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> ModelCard:
        check_model(backend, model_id)
        return ModelCard(id=model_id)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest):
        check_model(backend, req.model)
        check_input(guardrails, "\n".join(m.text() for m in req.messages))
        from tunelab.infer.engine import ChatMessage

        try:
            prompt = backend.encode_chat([ChatMessage(m.role, m.text()) for m in req.messages])
        except Exception as err:  # noqa: BLE001 - a template failure is the request's problem
            raise as_api_error(err) from err
        params = sampling_params(req, max_new_tokens(len(prompt), req.requested_max_tokens(), limits))
        handle = submit(generation_job(backend, req.model, [prompt], params, guardrails))
        rid = new_id("chatcmpl")
        if req.stream:
            include = bool(req.stream_options and req.stream_options.include_usage)
            first = chat_chunk(rid, req.model, None, None, role=True)
            events = stream_events(handle, lambda text, fin: chat_chunk(rid, req.model, text, fin), first, include)
            return StreamingResponse(events, media_type="text/event-stream")
        done = await collect(handle)
        record(done)
        return JSONResponse(chat_completion(rid, req.model, done).model_dump())

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        check_model(backend, req.model)
        texts = req.prompts()
        check_input(guardrails, "\n".join(p if isinstance(p, str) else backend.decode(p) for p in texts))
        prompts = [backend.encode(p) if isinstance(p, str) else p for p in texts]
        if req.stream and (len(prompts) > 1 or req.logprobs is not None or req.echo):
            raise APIError(400, "streaming completions take one prompt without echo/logprobs", param="stream")
        for p in prompts:  # 400 unless every prompt (+ max_tokens) fits the context
            max_new_tokens(len(p), req.max_tokens or None, limits)
        params = sampling_params(req, req.max_tokens)
        handle = submit(generation_job(backend, req.model, prompts, params, guardrails,
                                       logprobs=req.logprobs, echo=req.echo))
        rid = new_id("cmpl")
        if req.stream:
            include = bool(req.stream_options and req.stream_options.include_usage)
            events = stream_events(handle, lambda text, fin: completion_chunk(rid, req.model, text, fin), None, include)
            return StreamingResponse(events, media_type="text/event-stream")
        done = await collect(handle)
        record(done)
        echoes = [p if isinstance(p, str) else backend.decode(p) for p in texts] if req.echo else None
        return JSONResponse(completion(rid, req.model, done, echoes).model_dump())

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


class MetricsMiddleware:
    """Count every response by route and status and time it to its last byte (streams included)."""

    ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        route = next((r for r in self.ROUTES if scope["path"].startswith(r)), "other")
        status = 500

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.record_request(route, status, time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, send_wrapper)
