"""Flag instruction-like text found in media (OCR today, ASR transcripts later).

Text inside an image is data the user showed the model. When it reads like an instruction to
the model — "ignore previous instructions", "you are now", "reveal your system prompt", a
fake chat-role marker — the request's response says so (``media_safety``), and the untrusted
block in the prompt carries a warning. This is a heuristic scan with a fixed list of patterns
(the same families OWASP lists for indirect prompt injection), not a classifier: it explains
each finding, and it never blocks on its own; the operator decides the policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERNS: dict[str, str] = {
    "override": r"\b(ignore|disregard|forget|override)\b.{0,40}\b(instructions?|rules|prompts?|"
    r"guidelines|directions)\b",
    "role_change": r"\b(you are now|from now on,? you|act as|pretend (to be|you are)|"
    r"new instructions?)\b",
    "exfiltration": r"\b(reveal|print|show|repeat|leak)\b.{0,30}\b(system prompt|"
    r"instructions|password|api key|secret)\b",
    "role_marker": r"(<\|im_start\|>|<\|system\|>|\[/?INST\]|^\s*(system|assistant)\s*:)",
    "tool_abuse": r"\b(send|post|upload|email)\b.{0,40}\b(to|at)\b.{0,40}"
    r"(https?://|www\.|@[a-z0-9-]+\.)",
}
_COMPILED = {name: re.compile(p, re.IGNORECASE | re.MULTILINE) for name, p in _PATTERNS.items()}


@dataclass(frozen=True)
class Finding:
    kind: str  # which pattern family matched
    excerpt: str  # the matching text, at most 80 characters

    def as_dict(self) -> dict:
        return {"kind": self.kind, "excerpt": self.excerpt}


def scan(text: str) -> list[Finding]:
    """Every pattern family that matches ``text``, with the first match of each."""
    findings = []
    for kind, pattern in _COMPILED.items():
        match = pattern.search(text)
        if match:
            findings.append(Finding(kind, match.group(0).strip()[:80]))
    return findings
