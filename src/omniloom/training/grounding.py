"""Grounding: teach the projector to put each image token near the words for what it shows.

The synthetic generator knows where every object and text sits. Before any language-model
step, the projector learns to map each cell of the encoder's grid to the mean input embedding
of the words naming what covers it ("large red circle top left", the text "hotel", or
"background"). The frozen LLM then meets image tokens that already read like words, so the
caption and instruction stages spend their steps on asking and answering, not on discovering
an embedding space. It is cheap: no LLM forward, only the projector.
"""

from __future__ import annotations

import torch

from omniloom.eval.synthetic import Sample
from omniloom.models.registry import LoadedModel

BACKGROUND = ("background",)


def word_embedding(model: LoadedModel, words: tuple[str, ...]) -> torch.Tensor:
    """Mean input embedding of ``words`` (each as it reads mid-sentence), at a word's norm."""
    embed = model.vlm.backbone.embed
    vectors = [embed(torch.tensor(model.tokenizer.encode(" " + w))).float().mean(0) for w in words]
    mean = torch.stack(vectors).mean(0)
    typical = torch.stack(vectors).norm(dim=-1).mean()
    return mean * (typical / mean.norm())


def cell_words(sample: Sample, side: int) -> list[tuple[str, ...]]:
    """The words for each cell of a ``side``×``side`` grid over the (square) image: a region's
    words where the cell's centre lies inside its box or holds the box's centre. The encoder's
    grid covers the same area, as a square image fills its tile whole."""
    step = sample.image.width / side
    words = [BACKGROUND] * (side * side)
    for region in sample.regions:
        x0, y0, x1, y1 = region.box
        centre = (int((x0 + x1) / 2 // step), int((y0 + y1) / 2 // step))
        for row in range(side):
            for col in range(side):
                cx, cy = (col + 0.5) * step, (row + 0.5) * step
                inside = x0 <= cx <= x1 and y0 <= cy <= y1
                if inside or (col, row) == centre:
                    words[row * side + col] = region.words
    return words


@torch.no_grad()
def grounding_targets(samples: list[Sample], model: LoadedModel) -> torch.Tensor:
    """(N, cells, hidden) target embeddings, one per encoder grid cell of each sample."""
    side = round(model.vlm.encoder.tokens_per_tile() ** 0.5)
    cache: dict[tuple[str, ...], torch.Tensor] = {}
    rows = []
    for sample in samples:
        cells = cell_words(sample, side)
        for words in cells:
            if words not in cache:
                cache[words] = word_embedding(model, words)
        rows.append(torch.stack([cache[w] for w in cells]))
    return torch.stack(rows)


def grounding_loss(
    model: LoadedModel, features: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Mean squared distance of projected tokens to their targets, relative to target size."""
    projected = model.vlm.projector(features).float()
    return ((projected - targets) ** 2).sum(-1).mean() / (targets**2).sum(-1).mean()
