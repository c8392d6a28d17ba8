"""The vision suite: held-out synthetic questions (or a user's JSONL) through the real server.

Each item is asked several ways over HTTP with the official ``openai`` client: ``native`` (image
tokens from the trained projector), ``cascade`` (the image replaced by OCR text and encoder
labels), ``hybrid`` (both), ``auto`` (the server's default: hybrid where the adapter knows images
like it, else cascade) and ``blind`` (the image removed — the gap to blind shows the image is
used). The report has VQA accuracy by question type, OCR exact match, POPE metrics, hallucination
rate, latency percentiles, image tokens per request and the path that ran, as Markdown, JSON and
a PNG chart.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from omniloom.eval import scoring
from omniloom.eval.synthetic import make_sample

CONDITIONS = {
    "native": ("native", True),
    "cascade": ("cascade", True),
    "hybrid": ("hybrid", True),
    "auto": ("auto", True),
    "blind": ("native", False),
}
DEFAULT_CONDITIONS = ("native", "cascade", "auto", "blind")
# Real photographs from scikit-image, never trained on, and words that name what they show.
PHOTOS = {
    "chelsea": "cat|kitten|tabby",
    "coffee": "coffee|cup|espresso|mug",
    "rocket": "rocket|missile|shuttle|spacecraft|launch",
    "astronaut": "astronaut|person|woman|spacesuit|suit",
    "stereo_motorcycle": "motorcycle|motorbike|moped|scooter|bike",
    "camera": "man|person|camera|photographer|tripod|cameraman",
    "coins": "coin|money|penny",
    "moon": "moon|crater",
    "clock": "clock",
    "horse": "horse",
}


@dataclass(frozen=True)
class EvalItem:
    image_url: str  # the medium's URL: an image, or a video where ``media`` says so
    question: str
    answer: str
    kind: str
    media: str = "image"  # image | video


def _png_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def synthetic_items(limit: int) -> list[EvalItem]:
    """Questions from the test split (unseen seeds, fonts and shades), in sample order."""
    items: list[EvalItem] = []
    index = 0
    while len(items) < limit:
        sample = make_sample("test", index)
        url = _png_url(sample.image)
        items += [EvalItem(url, q.question, q.answer, q.kind) for q in sample.questions]
        index += 1
    return items[:limit]


def photo(name: str):
    """A scikit-image photograph (one of ``PHOTOS``) as RGB; a stereo pair gives its left image."""
    from PIL import Image
    from skimage import data

    pixels = getattr(data, name)()
    return Image.fromarray(pixels[0] if isinstance(pixels, tuple) else pixels).convert("RGB")


def photo_items() -> list[EvalItem]:
    """Ask what each real photograph in ``PHOTOS`` shows; any of its words counts as naming it."""
    return [
        EvalItem(_png_url(photo(name)), "What is in this image?", accepted, "name")
        for name, accepted in PHOTOS.items()
    ]


def jsonl_items(path: Path) -> list[EvalItem]:
    """``{"image": path or URL, "question", "answer", "kind"?}`` per line."""
    items = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        image = row["image"]
        if not image.startswith(("http://", "https://", "data:")):
            from PIL import Image

            image = _png_url(Image.open(path.parent / image))
        items.append(
            EvalItem(image, row["question"], str(row["answer"]), row.get("kind", "custom"))
        )
    return items


def _media_part(item: EvalItem) -> dict:
    if item.media == "video":
        return {"type": "video_url", "video_url": {"url": item.image_url}}
    return {"type": "image_url", "image_url": {"url": item.image_url, "detail": "low"}}


def ask(client, model: str, item: EvalItem, condition: str) -> scoring.Scored:
    perception, with_image = CONDITIONS[condition]
    content: list[dict] = [{"type": "text", "text": item.question}]
    if with_image:
        content.insert(0, _media_part(item))
    start = time.perf_counter()
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=48,
        temperature=0,
        extra_body={"perception": perception},
    )
    latency = time.perf_counter() - start
    prediction = r.choices[0].message.content or ""
    details = r.usage.prompt_tokens_details
    media_tokens = sum(getattr(details, f"{m}_tokens", 0) or 0 for m in ("image", "video"))
    correct = scoring.is_correct(item.kind, prediction, item.answer)
    path = (r.model_extra or {}).get("perception", "")
    return scoring.Scored(item.kind, item.answer, prediction, correct, latency, media_tokens, path)


def summarize(scored: list[scoring.Scored]) -> dict:
    latencies = [s.latency for s in scored]
    vqa = [s for s in scored if s.kind != "ocr"]
    vqa_right = sum(s.correct for s in vqa)
    counts = scoring.counts_by_kind(scored)
    by_type = scoring.accuracy_by_kind(scored)
    return {
        "n": len(scored),
        "accuracy_by_type": by_type,
        "questions_by_type": {kind: n for kind, (_, n) in counts.items()},
        "ci95_by_type": {kind: scoring.wilson_interval(*c) for kind, c in counts.items()},
        "vqa_accuracy": vqa_right / len(vqa) if vqa else None,
        "vqa_ci95": scoring.wilson_interval(vqa_right, len(vqa)) if vqa else None,
        "ocr_exact_match": by_type.get("ocr"),
        "pope": scoring.pope(scored),
        "latency_p50_s": scoring.percentile(latencies, 0.5),
        "latency_p95_s": scoring.percentile(latencies, 0.95),
        "image_tokens_per_request": sum(s.image_tokens for s in scored) / max(1, len(scored)),
        "paths": dict(Counter(s.path for s in scored)),
    }


def run_suite(
    client,
    model: str,
    items: list[EvalItem],
    conditions=("native", "cascade", "blind"),
    progress=None,
) -> dict:
    results = {}
    for condition in conditions:
        scored = []
        for item in items:
            scored.append(ask(client, model, item, condition))
            if progress:
                progress(condition, len(scored), len(items))
        results[condition] = {"summary": summarize(scored), "items": [asdict(s) for s in scored]}
    return results


def render_markdown(results: dict, title: str) -> str:
    conditions = list(results)
    kinds = sorted({k for r in results.values() for k in r["summary"]["accuracy_by_type"]})
    head = "| metric | " + " | ".join(conditions) + " |\n|---|" + "---|" * len(conditions) + "\n"
    rows = []

    def row(name, get, fmt="{:.1%}", interval=lambda s: None):
        if all(get(results[c]["summary"]) in (None, "") for c in conditions):
            return
        cells = []
        for c in conditions:
            value, bounds = get(results[c]["summary"]), interval(results[c]["summary"])
            cell = "—" if value is None else fmt.format(value)
            if value is not None and bounds is not None:
                cell += f" [{bounds[0] * 100:.0f}–{bounds[1] * 100:.0f}%]"
            cells.append(cell)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")

    for kind in kinds:
        row(
            f"accuracy: {kind}",
            lambda s, k=kind: s["accuracy_by_type"].get(k),
            interval=lambda s, k=kind: s["ci95_by_type"].get(k),
        )
    row("VQA accuracy (all but OCR)", lambda s: s["vqa_accuracy"], interval=lambda s: s["vqa_ci95"])
    row(
        "OCR exact match",
        lambda s: s["ocr_exact_match"],
        interval=lambda s: s["ci95_by_type"].get("ocr"),
    )
    row(
        "POPE accuracy",
        lambda s: s["pope"]["accuracy"] if s["pope"]["n"] else None,
        interval=lambda s: s["pope"]["accuracy_ci95"],
    )
    for key in ("precision", "recall", "f1", "yes_ratio", "hallucination_rate"):
        row(f"POPE {key}", lambda s, k=key: s["pope"][k] if s["pope"]["n"] else None)
    row("latency p50 (s)", lambda s: s["latency_p50_s"], "{:.2f}")
    row("latency p95 (s)", lambda s: s["latency_p95_s"], "{:.2f}")
    row("media tokens / request", lambda s: s["image_tokens_per_request"], "{:.1f}")
    row(
        "path that ran",
        lambda s: ", ".join(f"{p} {n}" for p, n in s.get("paths", {}).items() if p),
        "{}",
    )
    first = results[conditions[0]]["summary"]
    per_type = ", ".join(f"{k} {n}" for k, n in first["questions_by_type"].items())
    note = (
        f"{first['n']} questions per condition ({per_type}). "
        "[a–b]: the 95% Wilson interval of a rate over that many questions."
    )
    return f"# {title}\n\n{note}\n\n" + head + "\n".join(rows) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k for r in results.values() for k in r["summary"]["accuracy_by_type"]})
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(results)
    for i, (condition, r) in enumerate(results.items()):
        values = [r["summary"]["accuracy_by_type"].get(k, 0) for k in kinds]
        ax.bar([x + i * width for x in range(len(kinds))], values, width, label=condition)
    ax.set_xticks([x + width * (len(results) - 1) / 2 for x in range(len(kinds))], kinds)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: dict, out_dir: Path, title: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(results, indent=1))
    (out_dir / "report.md").write_text(render_markdown(results, title))
    plot(results, out_dir / "accuracy_by_type.png")
