"""Scoring free-text answers: normalisation per question kind, VQA accuracy and POPE metrics."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass

from omniloom.eval.synthetic import COLOURS, SHAPES

_NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_VOCAB = {
    "shape": SHAPES,
    "colour": COLOURS,
    "after_cut": COLOURS,
    "size": ("large", "small"),
    "yesno": ("yes", "no"),
}
NUMBER_KINDS = ("count", "scenes", "text_time")  # answered by a number
YES_NO_KINDS = ("position", "exists")


_ARTICLES = {"a", "an", "the"}


def words(text: str) -> list[str]:
    """Lower-case words without punctuation or articles (the VQA evaluation's normalisation)."""
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _ARTICLES]


def extract(kind: str, prediction: str) -> str:
    """The answer a prediction gives for a question of ``kind`` (first matching word)."""
    if kind == "ocr":
        quoted = re.search(r'["“\']([^"”\']+)["”\']', prediction)
        return " ".join(words(quoted.group(1) if quoted else prediction))
    if kind in NUMBER_KINDS:
        for w in words(prediction):
            if w.isdigit() or w in _NUMBER_WORDS:
                return _NUMBER_WORDS.get(w, w)
        return ""
    vocab = (
        _VOCAB["yesno" if kind in YES_NO_KINDS else kind]
        if kind in (*_VOCAB, *YES_NO_KINDS)
        else None
    )
    found = words(prediction)
    if vocab is None:
        return " ".join(found)
    return next((w for w in found if w in vocab), "")


def names(prediction: str, accepted: str) -> bool:
    """Whether ``prediction`` uses any of the ``|``-separated words (or their plurals)."""
    found = set(words(prediction))
    return any(w in found or f"{w}s" in found for w in accepted.split("|"))


def is_correct(kind: str, prediction: str, answer: str) -> bool:
    if kind == "name":
        return names(prediction, answer)
    return extract(kind, prediction) == " ".join(words(answer))


@dataclass(frozen=True)
class Scored:
    kind: str
    answer: str
    prediction: str
    correct: bool
    latency: float
    image_tokens: int
    path: str = ""  # the perception path the server says ran (``auto`` picks one per image)


def pope(scored: list[Scored]) -> dict[str, float]:
    """POPE-style metrics over yes/no existence questions (half are about absent objects)."""
    items = [s for s in scored if s.kind == "exists"]
    said_yes = [extract("exists", s.prediction) == "yes" for s in items]
    truth_yes = [s.answer == "yes" for s in items]
    tp = sum(p and t for p, t in zip(said_yes, truth_yes, strict=True))
    fp = sum(p and not t for p, t in zip(said_yes, truth_yes, strict=True))
    fn = sum(not p and t for p, t in zip(said_yes, truth_yes, strict=True))
    tn = len(items) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "n": len(items),
        "accuracy": (tp + tn) / len(items) if items else 0.0,
        "accuracy_ci95": wilson_interval(tp + tn, len(items)),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": sum(said_yes) / len(items) if items else 0.0,
        "hallucination_rate": fp / (fp + tn) if fp + tn else 0.0,
    }


def counts_by_kind(scored: list[Scored]) -> dict[str, tuple[int, int]]:
    """(correct, asked) per question kind."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for s in scored:
        groups[s.kind].append(s.correct)
    return {kind: (sum(v), len(v)) for kind, v in sorted(groups.items())}


def accuracy_by_kind(scored: list[Scored]) -> dict[str, float]:
    return {kind: right / n for kind, (right, n) in counts_by_kind(scored).items()}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate seen as ``successes`` out of ``n``: how far the
    true rate may sit from a score over few questions (40 questions at 70%: 55–82%)."""
    if n == 0:
        return 0.0, 1.0
    rate = successes / n
    spread = z * z / n
    centre = (rate + spread / 2) / (1 + spread)
    half = z * math.sqrt(rate * (1 - rate) / n + spread / (4 * n)) / (1 + spread)
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
