"""A text-quality check that compares weight formats on the same held-out prose.

The text is the Python language reference that ships with every Python (``pydoc_data.topics``),
cut into evenly spaced windows of one tokenizer's tokens. A model in each format reads every
window once (teacher forcing, as text is served: the vision LoRA off) and is scored on:

- next-token accuracy: how often its top-1 prediction is the text's next token;
- mean negative log-likelihood per token (nats);
- against a reference format's model (fp32): how often the two top-1 predictions agree, and how
  many greedy continuations of ``continue_tokens`` after each window's first half are identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from omniloom.models.lora import set_lora_active


@dataclass(frozen=True)
class TextScores:
    next_token_accuracy: float  # %
    nll: float  # nats per token
    top1: list[torch.Tensor]  # each window's top-1 predictions
    continuations: list[list[int]]  # greedy tokens after each window's first half


def reference_text(chars: int) -> str:
    """The first ``chars`` characters of the Python reference, topics in name order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))[:chars]


def windows(tokenizer, count: int, length: int) -> list[list[int]]:
    """``count`` windows of ``length`` tokens, evenly spaced through the reference text."""
    ids = tokenizer.encode(reference_text(count * length * 8))
    if len(ids) < count * length:
        raise ValueError(f"the reference text gives {len(ids)} tokens, fewer than asked")
    stride = len(ids) // count
    return [ids[i * stride : i * stride + length] for i in range(count)]


def score(model, token_windows: list[list[int]], continue_tokens: int = 32) -> TextScores:
    backbone = model.vlm.backbone
    set_lora_active(backbone, False)
    try:
        with torch.inference_mode():
            read = [_read(model, ids) for ids in token_windows]
            continued = [
                _greedy(model, ids[: len(ids) // 2], continue_tokens) for ids in token_windows
            ]
    finally:
        set_lora_active(backbone, True)
    hits = sum(h for h, _, _ in read)
    predicted = sum(len(ids) - 1 for ids in token_windows)
    return TextScores(
        next_token_accuracy=100.0 * hits / predicted,
        nll=sum(n for _, n, _ in read) / predicted,
        top1=[t for _, _, t in read],
        continuations=continued,
    )


def agreement(scores: TextScores, reference: TextScores) -> dict[str, float]:
    """How closely ``scores``' model follows the reference model's predictions (%)."""
    same = sum(int((a == b).sum()) for a, b in zip(scores.top1, reference.top1, strict=True))
    total = sum(t.numel() for t in reference.top1)
    identical = sum(
        a == b for a, b in zip(scores.continuations, reference.continuations, strict=True)
    )
    return {
        "top1_agreement": 100.0 * same / total,
        "identical_continuations": 100.0 * identical / len(reference.continuations),
    }


def _logits(model, ids: list[int]) -> torch.Tensor:
    net = model.vlm
    return net.backbone(net.embed_ids(torch.tensor(ids))[None])[0].float()


def _read(model, ids: list[int]) -> tuple[int, float, torch.Tensor]:
    """(correct top-1 predictions, summed NLL, the top-1 predictions) over one window."""
    logits = _logits(model, ids)[:-1]
    targets = torch.tensor(ids[1:])
    top1 = logits.argmax(-1)
    nll = F.cross_entropy(logits, targets, reduction="sum").item()
    return int((top1 == targets).sum()), nll, top1


def _greedy(model, ids: list[int], count: int) -> list[int]:
    """``count`` greedy tokens after ``ids``, one forward pass each over a KV cache."""
    net = model.vlm
    cache = net.backbone.new_cache(1, len(ids) + count)
    step = torch.tensor(ids)
    out = []
    for _ in range(count):
        logits = net.backbone(net.embed_ids(step)[None], cache, last_only=True)
        out.append(int(logits[0, -1].argmax()))
        step = torch.tensor(out[-1:])
    return out
