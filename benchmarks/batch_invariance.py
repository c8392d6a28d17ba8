"""Batch invariance: N concurrent mixed text/image requests at temperature 0 vs. each run alone.

Starts ``omniloom serve``, fires ``--requests`` chat requests at once (a mix of text questions
and image questions over several images and details), then sends each again on its own and
compares the outputs token for token. Prints how many are identical and, for any that are not,
where they first differ; writes ``benchmarks/results/batch_invariance.json``.
Usage: ``.venv/bin/python benchmarks/batch_invariance.py [--requests 100]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx
from serving import REPO, free_port, image_url, start_omniloom, wait_healthy

from omniloom.config import WEIGHT_FORMATS

QUESTIONS = (
    "Name three colours.",
    "What is the capital of France?",
    "Write a short poem about autumn.",
    "Explain what a CPU does in one sentence.",
    "List two animals that live in the sea.",
    "What is 12 times 7?",
    "Give me a tip for learning to cook.",
)


def bodies(count: int, tokens: int) -> list[dict]:
    out = []
    for i in range(count):
        question = f"{QUESTIONS[i % len(QUESTIONS)]} (request {i})"
        content: str | list = question
        if i % 3 == 2:  # a third carry an image: 5 images × 2 details
            detail = ("low", "high")[(i // 3) % 2]
            content = [
                {"type": "image_url", "image_url": {"url": image_url(i % 5), "detail": detail}},
                {"type": "text", "text": question},
            ]
        out.append(
            {
                "model": "omniloom-smol",
                "messages": [{"role": "user", "content": content}],
                "max_tokens": tokens,
                "temperature": 0,
            }
        )
    return out


async def send(client: httpx.AsyncClient, url: str, body: dict) -> str:
    r = await client.post(f"{url}/v1/chat/completions", json=body)
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


async def run(url: str, all_bodies: list[dict]) -> tuple[list[str], list[str], float]:
    async with httpx.AsyncClient(timeout=1800) as client:
        start = time.perf_counter()
        together = await asyncio.gather(*(send(client, url, b) for b in all_bodies))
        wall = time.perf_counter() - start
        alone = [await send(client, url, b) for b in all_bodies]
    return list(together), alone, wall


def first_difference(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--dtype", default="float32", choices=WEIGHT_FORMATS)
    parser.add_argument(
        "--out", default=str(REPO / "benchmarks" / "results" / "batch_invariance.json")
    )
    args = parser.parse_args()
    port = free_port()
    queue = str(args.requests)  # all of them at once: the queue bound must not refuse any
    proc = start_omniloom(port, args.dtype, limits_max_queued_requests=queue)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        together, alone, wall = asyncio.run(run(url, bodies(args.requests, args.tokens)))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    differing = [
        {"request": i, "first_difference_at_char": first_difference(t, a), "batched": t, "alone": a}
        for i, (t, a) in enumerate(zip(together, alone, strict=True))
        if t != a
    ]
    same = args.requests - len(differing)
    print(
        f"{same}/{args.requests} identical at temperature 0 ({args.dtype}); batch wall {wall:.1f} s"
    )
    for d in differing:
        print(f"  request {d['request']}: differs from char {d['first_difference_at_char']}")
    result = {
        "requests": args.requests,
        "identical": same,
        "dtype": args.dtype,
        "differing": differing,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
