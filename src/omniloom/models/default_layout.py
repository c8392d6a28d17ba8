"""The embedded default's image token layout and adapter facts, read without torch or weights.

Token accounting (``omniloom tokens``, ``/tokenize``'s cost rows) needs how many tokens a tile
of the default takes: the encoder's stride-32 grid over a tile, laid out as the installed
adapter's recipe says (``raster`` or ``places``). Everything here reads the adapter file's
metadata only, so a command that counts tokens starts in well under a second.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from safetensors import safe_open

from omniloom.processing.media_tokens import TileLayout

ADAPTER = Path(__file__).parent / "assets" / "adapter.safetensors"
ENCODER_STRIDE = 32  # EfficientNet-Lite0's last feature map: one cell per 32 pixels


def grid_cells(tile_size: int) -> int:
    """Feature vectors per tile: the stride-32 grid over a square tile, rounded up."""
    side = -(-tile_size // ENCODER_STRIDE)
    return side * side


def adapter_metadata(path: Path) -> dict[str, str]:
    """The adapter file's metadata (its recipe and validation losses); {} without a file."""
    if not path.exists():
        return {}
    with safe_open(str(path), "numpy") as f:
        return f.metadata() or {}


def trained_on_descriptions(metadata: dict[str, str]) -> bool:
    """Whether the adapter's recipe (in its metadata) had conversations that see an image only
    through the perception cascade's words; only then does it answer cascade prompts."""
    recipe = json.loads(metadata.get("recipe", "{}"))
    return any(stage.get("perception", 0) > 0 for stage in recipe.get("stages", []))


def adapter_layout(metadata: dict[str, str]) -> str:
    """The tile layout the adapter was trained with (its recipe's ``layout``)."""
    return json.loads(metadata.get("recipe", "{}")).get("layout", "raster")


def build_tile_layout(name: str, cells: int, tokenizer) -> TileLayout:
    if name == "raster":
        return TileLayout.raster(cells)
    if name == "places":
        return TileLayout.places(round(cells**0.5), tokenizer.encode)
    raise ValueError(f"unknown tile layout {name!r}; choose from raster, places")


@cache
def default_tile_layout(tile_size: int) -> TileLayout:
    """The installed adapter's layout over a ``tile_size`` tile (``places`` reads the default's
    tokenizer, for the words it writes between cells)."""
    name = adapter_layout(adapter_metadata(ADAPTER))
    return build_tile_layout(
        name, grid_cells(tile_size), _tokenizer() if name == "places" else None
    )


def _tokenizer():
    from gguf import GGUFReader

    from omniloom.models.specs.omniloom_smol import smollm2_gguf_path
    from omniloom.models.tokenizer import TextTokenizer
    from omniloom.models.weights.gguf_loader import read_tokenizer

    return TextTokenizer(read_tokenizer(GGUFReader(str(smollm2_gguf_path()))))
