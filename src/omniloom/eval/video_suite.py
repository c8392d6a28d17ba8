"""The video suite: held-out synthetic videos through the real server, asked with and without
the video.

Videos come from the test split of ``synthetic_video.py`` (seeds, colour shades and fonts the
video stage never saw), sent as ``video_url`` data URLs and sampled by the server's defaults.
Each question is asked ``native`` (the frames' image spans after their timestamps) and
``blind`` (the video removed: what the question and the model's habits alone give). Beside
them, ``prior`` answers every question with its kind's most common answer in the asked set — the
best any guess that ignores the video can do, so a score above it is owed to the video. The
report is the vision suite's: accuracy by question kind with 95% intervals, latency and media
tokens per request.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import asdict

from omniloom.eval import scoring
from omniloom.eval.synthetic_video import make_video_sample
from omniloom.eval.vision import EvalItem, summarize

CONDITIONS = ("native", "blind")


def video_items(limit: int) -> list[EvalItem]:
    """Questions about the test split's videos, in sample order."""
    items: list[EvalItem] = []
    index = 0
    while len(items) < limit:
        sample = make_video_sample("test", index)
        url = "data:video/mp4;base64," + base64.b64encode(sample.data).decode()
        items += [EvalItem(url, q.question, q.answer, q.kind, "video") for q in sample.questions]
        index += 1
    return items[:limit]


def prior(items: list[EvalItem]) -> dict:
    """The ``prior`` condition: each kind's most common answer given to all its questions."""
    common = {
        kind: Counter(i.answer for i in items if i.kind == kind).most_common(1)[0][0]
        for kind in {i.kind for i in items}
    }
    scored = [
        scoring.Scored(i.kind, i.answer, common[i.kind], common[i.kind] == i.answer, 0.0, 0, "")
        for i in items
    ]
    summary = summarize(scored) | {"latency_p50_s": None, "latency_p95_s": None}
    return {"summary": summary, "items": [asdict(s) for s in scored]}
