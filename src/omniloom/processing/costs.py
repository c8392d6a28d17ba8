"""Per-image token counts and input cost across omniloom's and other providers' models.

One row per model: the token count by that model's own algorithm and its price from the dated
table ``prices.json``. Used by ``omniloom tokens``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image

from omniloom.config import Settings
from omniloom.media.image import decode_image
from omniloom.processing import provider_tokens as pt
from omniloom.processing.media_tokens import TileLayout, count_image_tokens
from omniloom.processing.tiling import plan_image

PRICES_FILE = Path(__file__).with_name("prices.json")


@dataclass(frozen=True)
class CostRow:
    model: str
    tokens: float
    how: str
    price_per_mtok: float | None

    @property
    def cost(self) -> float | None:
        return None if self.price_per_mtok is None else self.tokens * self.price_per_mtok / 1e6


@cache
def load_prices(path: Path = PRICES_FILE) -> dict:
    return json.loads(path.read_text())


def omniloom_tokens(
    width: int, height: int, detail: str, settings: Settings, layout: TileLayout
) -> pt.TokenCount:
    plan = plan_image(width, height, detail, settings.image)
    tokens = count_image_tokens(plan, layout)
    return pt.TokenCount(tokens, f"{plan.detail}: {plan.cols}×{plan.rows} grid, {plan.tiles} tiles")


def _openai_detail(detail: str) -> str:
    return "low" if detail == "low" else "high"  # auto is costed as high: the worst case


def model_counters(
    detail: str, settings: Settings, layout: TileLayout
) -> dict[str, Callable[[int, int], pt.TokenCount]]:
    od = _openai_detail(detail)
    return {
        "omniloom-smol": lambda w, h: omniloom_tokens(w, h, detail, settings, layout),
        "gpt-4o": lambda w, h: pt.openai_tiles(w, h, od, 85, 170),
        "gpt-4o-mini": lambda w, h: pt.openai_tiles(w, h, od, 2833, 5667),
        "gpt-4.1": lambda w, h: pt.openai_tiles(w, h, od, 85, 170),
        "gpt-4.1-mini": lambda w, h: pt.openai_patches(w, h, 1.62),
        "gpt-4.1-nano": lambda w, h: pt.openai_patches(w, h, 2.46),
        "o3": lambda w, h: pt.openai_tiles(w, h, od, 75, 150),
        "o4-mini": lambda w, h: pt.openai_patches(w, h, 1.72),
        "gpt-5": lambda w, h: pt.openai_tiles(w, h, od, 70, 140),
        "claude-sonnet-4.5": pt.claude,
        "claude-haiku-4.5": pt.claude,
        "claude-opus-4.5": pt.claude,
        "gemini-2.5-pro": pt.gemini,
        "gemini-2.5-flash": pt.gemini,
        "qwen2.5-vl-72b": lambda w, h: pt.qwen2_vl(w, h, max_pixels=12_845_056),
        "qwen2-vl-7b": lambda w, h: pt.qwen2_vl(w, h, max_pixels=12_845_056),
        "internvl3-8b": pt.internvl,
        "llama-3.2-11b-vision": pt.llama32_vision,
        "smolvlm-instruct": pt.smolvlm,
    }


def image_size(data: bytes, settings: Settings) -> tuple[int, int]:
    """Size after EXIF orientation, read without decoding when the header allows."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            orientation = img.getexif().get(0x0112, 1)
            w, h = img.size
    except OSError:
        decoded = decode_image(data, settings.limits)
        return decoded.width, decoded.height
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def image_cost_table(
    data: bytes, detail: str, settings: Settings, layout: TileLayout
) -> list[CostRow]:
    """``layout``: the tile layout omniloom's model serves with (its tokens per tile)."""
    width, height = image_size(data, settings)
    return image_cost_rows(width, height, detail, settings, layout)


def image_cost_rows(
    width: int, height: int, detail: str, settings: Settings, layout: TileLayout
) -> list[CostRow]:
    """One row per model for an image of ``width`` × ``height`` pixels."""
    prices = load_prices()["models"]
    rows = []
    for model, counter in model_counters(detail, settings, layout).items():
        count = counter(width, height)
        rows.append(CostRow(model, count.tokens, count.detail, prices.get(model, {}).get("price")))
    return rows


def price_of(model: str) -> float | None:
    """The dated table's price per million input tokens (None where it has none)."""
    return load_prices()["models"].get(model, {}).get("price")


def render_table(title: str, rows: list[CostRow]) -> str:
    prices = load_prices()
    lines = [
        f"{title}",
        f"{'model':<22}{'tokens':>10}  {'$/1M':>6}  {'cost $':>10}  how",
    ]
    for r in rows:
        price = "—" if r.price_per_mtok is None else f"{r.price_per_mtok:.2f}"
        cost = "—" if r.cost is None else f"{r.cost:.6f}"
        tokens = f"{r.tokens:g}"
        lines.append(f"{r.model:<22}{tokens:>10}  {price:>6}  {cost:>10}  {r.how}")
    lines.append(f"(prices as of {prices['as_of']}, {prices['currency']} {prices['unit']})")
    return "\n".join(lines)
