"""The server's settings and the objects every route shares (model backend, worker, metrics).

Routes live in :mod:`tunelab.serve.routes` as ``APIRouter`` modules; they reach this state
through :func:`server_state` (a FastAPI dependency), so a new router (a vote page, a demo)
needs no change to :func:`tunelab.serve.app.create_app` beyond being listed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from tunelab.serve.backend import Backend
from tunelab.serve.errors import APIError
from tunelab.serve.guardrails import GuardrailChain
from tunelab.serve.jobs import Generated, Limits, as_api_error
from tunelab.serve.metrics import Metrics
from tunelab.serve.worker import Job, JobHandle, QueueFull, Worker


@dataclass(frozen=True)
class ServerSettings:
    """Server limits and security settings (the ``tunelab serve`` flags).

    ``max_prompts`` and ``max_request_tokens`` bound one request's work (prompts, and
    choices x prompts x max_tokens), so a single request cannot hold the one model worker for
    hours while every other client waits.
    """

    api_key: str | None = None
    max_queue: int = 64
    max_tokens_limit: int = 4096
    max_body_bytes: int = 1_000_000
    max_prompts: int = 16
    max_request_tokens: int = 16_384

    def limits(self, max_context: int) -> Limits:
        return Limits(self.max_tokens_limit, max_context, self.max_prompts, self.max_request_tokens)


@dataclass
class ServerState:
    """What the routes of one app share; stored as ``app.state.server``."""

    backend: Backend
    settings: ServerSettings
    guardrails: GuardrailChain
    worker: Worker
    metrics: Metrics

    @property
    def limits(self) -> Limits:
        return self.settings.limits(self.backend.max_context)

    def submit(self, job: Job) -> JobHandle:
        try:
            return self.worker.submit(job)
        except QueueFull as err:
            raise APIError(429, f"the server queue is full ({self.settings.max_queue} waiting); retry shortly",
                           code="queue_full") from err

    async def collect(self, handle: JobHandle, request: Request) -> list[Generated]:
        """Every generation of a non-streaming job; a client that disconnects cancels the job
        (its worker stops at the next token instead of generating for nobody)."""
        watcher = asyncio.create_task(_cancel_on_disconnect(request, handle))
        try:
            done = [ev async for ev in handle if isinstance(ev, Generated)]
        except Exception as err:  # noqa: BLE001 - reported as an OpenAI error object
            raise as_api_error(err) from err
        finally:
            watcher.cancel()
        self.record(done)
        if handle.cancelled.is_set():
            self.metrics.record_cancelled()
        return done

    def record(self, done: Sequence[Generated]) -> None:
        for g in done:
            ttft = g.result.timings.time_to_first_token if g.result.tokens else None
            self.metrics.record_tokens(g.prompt_tokens, len(g.result.tokens), ttft)


async def _cancel_on_disconnect(request: Request, handle: JobHandle) -> None:
    # The body was read before the route ran, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
    handle.cancelled.set()


def server_state(request: Request) -> ServerState:
    """FastAPI dependency: the state of the app serving ``request``."""
    return request.app.state.server


#: Route parameter type for the shared state: ``state: State``.
State = Annotated[ServerState, Depends(server_state)]
