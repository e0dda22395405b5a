"""``GET /v1/models`` and ``GET /v1/models/{id}``: the base model and each adapter by name."""

from __future__ import annotations

from fastapi import APIRouter

from tunelab.serve.jobs import check_model
from tunelab.serve.schemas import ModelCard, ModelList
from tunelab.serve.state import State

router = APIRouter(prefix="/v1")


@router.get("/models")
async def models(state: State) -> ModelList:
    return ModelList(data=[ModelCard(id=m) for m in state.backend.model_ids()])


@router.get("/models/{model_id:path}")
async def model(model_id: str, state: State) -> ModelCard:
    check_model(state.backend, model_id)
    return ModelCard(id=model_id)
