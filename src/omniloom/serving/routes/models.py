"""``GET /v1/models`` and ``GET /v1/models/{id}``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from omniloom.errors import ModelNotFound
from omniloom.serving.state import ServerState

router = APIRouter()
_CREATED = 1_763_856_000  # fixed: a model's card does not change between restarts


def _card(state: ServerState) -> dict:
    m = state.model
    return {
        "id": m.name,
        "object": "model",
        "created": _CREATED,
        "owned_by": "omniloom",
        "max_model_len": m.context_length,
        "family": m.family,
        "input_modalities": ["text", *sorted(m.modalities & set(m.processors))],
        "output_modalities": ["text"],
        "chat_template": m.template is not None,
    }


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    return {"object": "list", "data": [_card(request.app.state.omniloom)]}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, request: Request) -> dict:
    state: ServerState = request.app.state.omniloom
    if model_id != state.model.name:
        raise ModelNotFound(model_id, [state.model.name])
    return _card(state)
