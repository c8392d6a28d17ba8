"""Image-token counts of hosted and open models, each by its provider's documented algorithm.

Each function's docstring states its provider's rule; where a worked example disagrees with the
documented algorithm, ``docs/token-math.md`` lists the case. Integer arithmetic is used wherever
a float could land on the wrong side of a floor or ceil. Sizes are (width, height) in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from omniloom.processing.tiling import choose_grid


@dataclass(frozen=True)
class TokenCount:
    tokens: float
    detail: str = ""  # how it was reached, for people reading the table


def _ceil_frac(x: Fraction) -> int:
    return -(-x.numerator // x.denominator)


def openai_tiles(width: int, height: int, detail: str, base: int, per_tile: int) -> TokenCount:
    """GPT-4o family: fit in 2048², shortest side to 768 (never upscaled), 512 px tiles."""
    if detail == "low":
        return TokenCount(base, "low: base only")
    w, h = Fraction(width), Fraction(height)
    fit = min(Fraction(1), Fraction(2048) / max(w, h))
    w, h = w * fit, h * fit
    shrink = min(Fraction(1), Fraction(768) / min(w, h))
    w, h = w * shrink, h * shrink
    cols, rows = _ceil_frac(w / 512), _ceil_frac(h / 512)
    return TokenCount(base + per_tile * cols * rows, f"{round(w)}×{round(h)} → {cols}×{rows} tiles")


def openai_patches(width: int, height: int, multiplier: float) -> TokenCount:
    """GPT-4.1-mini/nano, o4-mini: 32 px patches, scaled down to at most 1536 patches."""
    raw = math.ceil(width / 32) * math.ceil(height / 32)
    if raw <= 1536:
        return TokenCount(raw * multiplier, f"{raw} patches × {multiplier}")
    # wr/32 = sqrt(1536·w/h), hr/32 = sqrt(1536·h/w); floor the tighter side exactly.
    fw = math.isqrt(1536 * width // height)
    fh = math.isqrt(1536 * height // width)
    if fw * height <= fh * width:
        cols, rows = fw, _ceil_frac(Fraction(fw * height, width))
    else:
        cols, rows = _ceil_frac(Fraction(fh * width, height)), fh
    patches = min(cols * rows, 1536)
    return TokenCount(patches * multiplier, f"{cols}×{rows} patches × {multiplier}")


def _claude_patches(width: int, height: int) -> int:
    return math.ceil(width / 28) * math.ceil(height / 28)


def claude_resize(
    width: int, height: int, max_edge: int = 1568, max_patches: int = 1568
) -> tuple[int, int]:
    """Largest aspect-preserving size with long edge ≤ 1568 and ≤ 1568 patches of 28 px."""
    if max(width, height) <= max_edge and _claude_patches(width, height) <= max_patches:
        return width, height
    long_side, short_side = max(width, height), min(width, height)
    for edge in range(min(long_side, max_edge), 0, -1):
        short = max(1, round(edge * short_side / long_side))
        w, h = (edge, short) if width >= height else (short, edge)
        if _claude_patches(w, h) <= max_patches:
            return w, h
    return 1, 1


def claude(width: int, height: int) -> TokenCount:
    """Claude: resize as above, then ceil(w·h / 750) (the docs' examples imply ceil)."""
    w, h = claude_resize(width, height)
    return TokenCount(_ceil_frac(Fraction(w * h, 750)), f"resized {w}×{h}, ⌈w·h/750⌉")


def claude_patches(width: int, height: int) -> TokenCount:
    """Claude's current docs: ⌈w/28⌉·⌈h/28⌉ visual tokens after the same resize."""
    w, h = claude_resize(width, height)
    return TokenCount(_claude_patches(w, h), f"resized {w}×{h}, 28 px patches")


def gemini(width: int, height: int) -> TokenCount:
    """Gemini 2.x: 258 if both sides ≤ 384, else 258 per crop unit min(w,h)/1.5 ∈ [256, 768]."""
    if width <= 384 and height <= 384:
        return TokenCount(258, "≤384 px: one tile")
    unit = min(max(Fraction(min(width, height), 1) / Fraction(3, 2), Fraction(256)), Fraction(768))
    tiles = _ceil_frac(width / unit) * _ceil_frac(height / unit)
    return TokenCount(258 * tiles, f"crop unit {float(unit):.0f} px, {tiles} tiles")


def qwen2_vl_grid(
    width: int, height: int, min_pixels: int = 3136, max_pixels: int = 1_003_520, factor: int = 28
) -> tuple[int, int, int]:
    """transformers' ``smart_resize``: (t, h, w) of the patch grid (14 px patches)."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return 1, h_bar // 14, w_bar // 14


def qwen2_vl(width: int, height: int, max_pixels: int = 1_003_520) -> TokenCount:
    """Qwen2-VL / Qwen2.5-VL: t·h·w / 4 image pads, plus vision start/end (shown separately)."""
    t, gh, gw = qwen2_vl_grid(width, height, max_pixels=max_pixels)
    return TokenCount(t * gh * gw // 4, f"grid_thw [{t}, {gh}, {gw}] (+2 start/end)")


def internvl(width: int, height: int, max_tiles: int = 12) -> TokenCount:
    """InternVL2.5/3: closest-aspect grid of 448 px tiles (≤ 12), thumbnail if > 1, 256 each."""
    cols, rows = choose_grid(width, height, max_tiles, 448)
    tiles = cols * rows + (1 if cols * rows > 1 else 0)
    return TokenCount(256 * tiles, f"{cols}×{rows} grid, {tiles} tiles (+2 <img></img>)")


def mllama_canvas(width: int, height: int, max_tiles: int = 4, tile: int = 560) -> tuple[int, int]:
    """Llama 3.2 Vision: (rows, cols) of the canvas — smallest upscale, else largest downscale."""
    grids = [
        (r, c)
        for r in range(1, max_tiles + 1)
        for c in range(1, max_tiles + 1)
        if r * c <= max_tiles
    ]
    scales = [min(Fraction(r * tile, height), Fraction(c * tile, width)) for r, c in grids]
    ups = [s for s in scales if s >= 1]
    chosen = min(ups) if ups else max(scales)
    candidates = [g for g, s in zip(grids, scales, strict=True) if s == chosen]
    return min(candidates, key=lambda g: g[0] * g[1])


def llama32_vision(width: int, height: int) -> TokenCount:
    rows, cols = mllama_canvas(width, height)
    tiles = rows * cols
    return TokenCount(1601 * tiles, f"{rows}×{cols} canvas, {tiles} tiles × 1601 (1 text token)")


def smolvlm_grid(width: int, height: int, longest_edge: int, tile: int) -> tuple[int, int]:
    """Idefics3/SmolVLM: resize longest edge (upscaling), round sides up to tiles → (rows, cols)."""
    aspect = width / height
    if width >= height:
        w, h = longest_edge, int(longest_edge / aspect)
        h += h % 2
    else:
        h, w = longest_edge, int(longest_edge * aspect)
        w += w % 2
    w, h = max(w, 1), max(h, 1)  # transformers' min_len: a 5000×1 strip stays one pixel high
    aspect = w / h
    if w >= h:
        w = math.ceil(w / tile) * tile
        h = math.ceil(int(w / aspect) / tile) * tile
    else:
        h = math.ceil(h / tile) * tile
        w = math.ceil(int(h * aspect) / tile) * tile
    return h // tile, w // tile


def smolvlm(
    width: int, height: int, longest_edge: int = 1536, tile: int = 384, seq_len: int = 81
) -> TokenCount:
    rows, cols = smolvlm_grid(width, height, longest_edge, tile)
    images = rows * cols + 1 if rows * cols > 1 else 1
    return TokenCount(images * seq_len, f"{rows}×{cols} tiles + global, {seq_len} each")
