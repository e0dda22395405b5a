"""``GET /health`` (open, for load balancers) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from tunelab.serve.state import State

router = APIRouter()


@router.get("/health")
async def health(state: State) -> dict:
    return {"status": "ok", "models": state.backend.model_ids(), "queue_depth": state.worker.queue_depth}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: State) -> PlainTextResponse:
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")
