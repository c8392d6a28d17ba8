"""``POST /tokenize``: the prompt's token count and per-modality split, before anything runs.

Takes the same body as chat completions and builds the prompt through the same code, so its
``count`` equals the ``usage.prompt_tokens`` of the real request. Videos are not decoded: their
frames are planned from the container's metadata, which is exact for the ``uniform`` and
``keyframes`` strategies; for ``scene``, ``adaptive`` or pooled frames the count is an upper
bound, and ``exact`` says so (``videos`` gives each video's plan). With ``?previews=true`` videos
are decoded and sampled as the real request does (exact for every strategy), and each plan
carries ``previews``: the kept frames as small JPEG data URLs, what the playground shows.

Each media entry also says where its tokens come from — ``grid`` (the tiles or merged patches
laid over the picture: columns, rows, and whether a whole-picture view is added), a video
frame's ``timestamp`` — and, for images, what the same picture would cost elsewhere: ``costs``
has this model's row and the hosted models' (``processing/costs.py``, the table ``omniloom
tokens`` prints).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from omniloom.models.registry import default_tile_layout
from omniloom.processing.costs import image_cost_rows, price_of
from omniloom.processing.prompt import MediaSpan
from omniloom.serving.requests import hears_audio, plan_request_prompt
from omniloom.serving.responses import MODALITIES
from omniloom.serving.schemas import ChatCompletionRequest
from omniloom.serving.state import ServerState

router = APIRouter()


@router.post("/tokenize")
async def tokenize(body: ChatCompletionRequest, request: Request, previews: bool = False) -> dict:
    state: ServerState = request.app.state.omniloom
    cascade = await run_in_threadpool(state.cascade_for, body.perception)
    transcriber = (
        await run_in_threadpool(state.transcriber)
        if hears_audio(body, state.model, state.settings)
        else None
    )
    prompt, videos = await run_in_threadpool(
        plan_request_prompt, body, state.model, state.settings, cascade, transcriber, previews
    )
    by_modality = prompt.tokens_by_modality()
    return {
        "count": len(prompt.token_ids),
        "exact": all(v["exact"] for v in videos),
        "max_model_len": state.model.context_length,
        "prompt_tokens_details": {f"{m}_tokens": by_modality.get(m, 0) for m in MODALITIES},
        "media": [_media_entry(span, state) for span in prompt.spans],
        "videos": videos,
        "tokens": prompt.token_ids,
    }


def _media_entry(span: MediaSpan, state: ServerState) -> dict:
    item = span.item
    entry = {
        "modality": span.modality,
        "start": span.start,
        "tokens": span.length,
        "content_hash": item.content_hash,
        "preprocessing": item.cache_key(),
    }
    if (grid := _grid(item)) is not None:
        entry["grid"] = grid
    if (timestamp := getattr(item, "timestamp", None)) is not None:
        entry["timestamp"] = timestamp
    if span.modality == "image" and hasattr(item, "decoded"):
        entry["costs"] = _costs(span, state)
    return entry


def _grid(item) -> dict | None:
    """How the picture is cut: the default's tile grid (plus its whole-picture view), or a
    native-resolution family's merged patches."""
    plan = getattr(item, "plan", None)
    if plan is not None:
        cols, rows = (plan.cols, plan.rows) if plan.grid_tiles else (1, 1)
        return {"cols": cols, "rows": rows, "whole_view": bool(plan.grid_tiles)}
    grid, settings = getattr(item, "grid", None), getattr(item, "settings", None)
    if grid is None or settings is None:
        return None
    merge = settings.merge_size
    return {"cols": grid[2] // merge, "rows": grid[1] // merge, "whole_view": False}


def _costs(span: MediaSpan, state: ServerState) -> list[dict]:
    """This model's tokens for the image, then the hosted models' for the same picture."""
    decoded, settings = span.item.decoded, state.settings
    detail = getattr(getattr(span.item, "plan", None), "detail", None) or "auto"
    layout = default_tile_layout(settings.image.tile_size)
    name = state.model.name
    rows = [{"model": name, "tokens": span.length, "price": price_of(name)}]
    for row in image_cost_rows(decoded.width, decoded.height, detail, settings, layout):
        if row.model != "omniloom-smol":
            rows.append({"model": row.model, "tokens": row.tokens, "price": row.price_per_mtok})
    return rows
