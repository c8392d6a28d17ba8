"""``GET /v1/models`` and ``GET /v1/models/{id}``: the language model, and the speech models
under their own names and OpenAI's (``whisper-1``, ``tts-1``, ...), each saying what it serves."""

from __future__ import annotations

from fastapi import APIRouter, Request

from omniloom.errors import ModelNotFound
from omniloom.models.quantize import weight_format_of
from omniloom.serving.state import ServerState
from omniloom.speech.asr import TRANSCRIPTION_MODELS, served_name
from omniloom.speech.tts import OPENAI_VOICES, SPEECH_MODELS, served_voice

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
        "weight_format": weight_format_of(m.vlm.backbone),
        "input_modalities": ["text", *sorted(m.modalities & set(m.processors))],
        "output_modalities": ["text"],
        "chat_template": m.template is not None,
        "audio_perception": m.audio_path,  # how input_audio is heard unless a request says
    }


def _speech_cards(state: ServerState) -> list[dict]:
    recogniser = served_name(state.settings.asr_model or None)
    voice = served_voice(state.settings.tts_voice or None)
    base = {"object": "model", "created": _CREATED, "owned_by": "omniloom"}
    hears = {"input_modalities": ["audio"], "output_modalities": ["text"], "served_by": recogniser}
    speaks = {
        "input_modalities": ["text"],
        "output_modalities": ["audio"],
        "served_by": f"piper-{voice}",
        "voices": [voice, *OPENAI_VOICES],
    }
    return [base | {"id": name} | hears for name in (recogniser, *TRANSCRIPTION_MODELS)] + [
        base | {"id": name} | speaks for name in (f"piper-{voice}", *SPEECH_MODELS)
    ]


def _cards(state: ServerState) -> list[dict]:
    return [_card(state), *_speech_cards(state)]


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    return {"object": "list", "data": _cards(request.app.state.omniloom)}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, request: Request) -> dict:
    cards = _cards(request.app.state.omniloom)
    for card in cards:
        if card["id"] == model_id:
            return card
    raise ModelNotFound(model_id, [card["id"] for card in cards])
