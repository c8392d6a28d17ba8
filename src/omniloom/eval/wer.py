"""Word error rate: word-level edit distance over the reference's length, after normalising
case, punctuation, spacing and numbers (whole numbers below a million are spelled out, so
"9" and "nine" are the same word), as ASR evaluations do."""

from __future__ import annotations

import re

_NOT_WORD = re.compile(r"[^a-z0-9' ]+")
_NUMBER = re.compile(r"\d{1,6}")
_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def spell(n: int) -> str:
    """``n`` (0 ≤ n < 1,000,000) in English words."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = "" if n % 100 == 0 else " " + spell(n % 100)
        return f"{_ONES[n // 100]} hundred{rest}"
    rest = "" if n % 1000 == 0 else " " + spell(n % 1000)
    return f"{spell(n // 1000)} thousand{rest}"


def words(text: str) -> list[str]:
    """Lower case, numbers spelled out, punctuation dropped (hyphens split words),
    apostrophes kept."""
    text = _NUMBER.sub(lambda m: f" {spell(int(m.group()))} ", text.lower().replace(",", ""))
    return _NOT_WORD.sub(" ", text.replace("-", " ")).split()


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Substitutions + deletions + insertions turning ``reference`` into ``hypothesis``."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Errors over all pairs divided by the reference words in all of them."""
    errors = total = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref = words(reference)
        errors += edit_distance(ref, words(hypothesis))
        total += len(ref)
    return errors / max(total, 1)
