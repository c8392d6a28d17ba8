"""``POST /tokenize``: the prompt's token count and per-modality split, before anything runs.

Takes the same body as chat completions and builds the prompt through the same code, so its
``count`` equals the ``usage.prompt_tokens`` of the real request. Videos are not decoded: their
frames are planned from the container's metadata, which is exact for the ``uniform`` and
``keyframes`` strategies; for ``scene``, ``adaptive`` or pooled frames the count is an upper
bound, and ``exact`` says so (``videos`` gives each video's plan).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from omniloom.serving.requests import hears_audio, plan_request_prompt
from omniloom.serving.responses import MODALITIES
from omniloom.serving.schemas import ChatCompletionRequest
from omniloom.serving.state import ServerState

router = APIRouter()


@router.post("/tokenize")
async def tokenize(body: ChatCompletionRequest, request: Request) -> dict:
    state: ServerState = request.app.state.omniloom
    cascade = await run_in_threadpool(state.cascade_for, body.perception)
    transcriber = (
        await run_in_threadpool(state.transcriber)
        if hears_audio(body, state.model, state.settings)
        else None
    )
    prompt, videos = await run_in_threadpool(
        plan_request_prompt, body, state.model, state.settings, cascade, transcriber
    )
    by_modality = prompt.tokens_by_modality()
    return {
        "count": len(prompt.token_ids),
        "exact": all(v["exact"] for v in videos),
        "max_model_len": state.model.context_length,
        "prompt_tokens_details": {f"{m}_tokens": by_modality.get(m, 0) for m in MODALITIES},
        "media": [
            {
                "modality": span.modality,
                "start": span.start,
                "tokens": span.length,
                "content_hash": span.item.content_hash,
                "preprocessing": span.item.cache_key(),
            }
            for span in prompt.spans
        ],
        "videos": videos,
        "tokens": prompt.token_ids,
    }
