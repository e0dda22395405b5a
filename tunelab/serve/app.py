"""The OpenAI-compatible HTTP API (FastAPI). Transport only: the generator is injected.

Routes (in :mod:`tunelab.serve.routes`): ``GET /health``, ``GET /metrics``, ``GET /v1/models``,
``POST /v1/chat/completions``, ``POST /v1/completions``. Model access is serialised by one
:class:`Worker` thread behind a bounded queue; streaming uses server-sent events ending in
``data: [DONE]``. This module only wires the routers, error handlers and middleware together.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tunelab.serve.backend import Backend
from tunelab.serve.errors import install_error_handlers
from tunelab.serve.guardrails import Guardrail, GuardrailChain, Scanner, special_tokens_of
from tunelab.serve.metrics import Metrics
from tunelab.serve.middleware import ApiKeyMiddleware, BodyLimitMiddleware, MetricsMiddleware
from tunelab.serve.routes import ROUTERS
from tunelab.serve.state import ServerSettings, ServerState
from tunelab.serve.worker import Worker

__all__ = ["ServerSettings", "create_app"]


def create_app(backend: Backend, settings: ServerSettings | None = None,
               guardrails: Sequence[Guardrail | Scanner] | GuardrailChain = ()) -> FastAPI:
    """Build the app around ``backend``; the worker thread stops when the app shuts down.

    ``guardrails`` also learn the backend tokenizer's special tokens (escaped in user text)
    and report every event to ``/metrics``."""
    settings = settings or ServerSettings()
    worker = Worker(settings.max_queue)
    metrics = Metrics(lambda: worker.queue_depth, lambda: worker.busy)
    chain = guardrails if isinstance(guardrails, GuardrailChain) else GuardrailChain(guardrails)
    chain = chain.bind(special_tokens=special_tokens_of(backend),
                       listener=lambda v, stage: metrics.record_guardrail(v.guardrail, stage, v.action))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.close()  # uvicorn has already waited for in-flight responses

    app = FastAPI(title="tunelab", lifespan=lifespan)
    app.state.server = ServerState(backend, settings, chain, worker, metrics)
    app.state.worker, app.state.metrics = worker, metrics
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
