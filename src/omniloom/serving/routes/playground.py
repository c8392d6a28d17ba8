"""``GET /``: the browser playground, and ``/playground/*`` its script and styles.

Plain HTML, CSS and JavaScript shipped in the package (``serving/playground/``): no CDN, no
build step. The page talks to the same API as any client (``/v1/models``, ``/tokenize``,
``/v1/chat/completions``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

PAGE_DIR = Path(__file__).resolve().parents[1] / "playground"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(PAGE_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def assets() -> StaticFiles:
    return StaticFiles(directory=PAGE_DIR)
