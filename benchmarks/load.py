"""Overload test: offer several times the server's capacity and check nothing is lost.

Starts ``omniloom serve`` (default limits), measures capacity (completed requests per second
with ``--probe-concurrency`` clients in a closed loop), then offers ``--overload`` × that rate
open-loop for ``--duration`` seconds: a mix of text and small-image requests. Every request must
end as served (200) or refused (429/503 with ``Retry-After``); anything else is an error, and
one with no answer within ``--request-timeout`` is hung. The server's RSS is sampled throughout.
Prints a table and writes ``benchmarks/results/load.json``.
Usage: ``.venv/bin/python benchmarks/load.py [--duration 120] [--overload 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from serving import REPO, free_port, image_url, start_omniloom, wait_healthy

from omniloom.config import WEIGHT_FORMATS

IMAGES = [image_url(seed) for seed in range(4)]


@dataclass
class Outcome:
    status: int  # HTTP status; 0 = transport error; -1 = hung
    seconds: float
    retry_after: bool


def body(i: int, tokens: int) -> dict:
    content: str | list = f"Request {i}: name an animal and say one fact about it."
    if i % 4 == 3:
        content = [
            {"type": "image_url", "image_url": {"url": IMAGES[i % 4], "detail": "low"}},
            {"type": "text", "text": f"Request {i}: describe this image."},
        ]
    messages = [{"role": "user", "content": content}]
    return {"model": "omniloom-smol", "messages": messages, "max_tokens": tokens, "temperature": 0}


async def one(client: httpx.AsyncClient, url: str, payload: dict, timeout: float) -> Outcome:
    start = time.perf_counter()
    try:
        r = await asyncio.wait_for(client.post(f"{url}/v1/chat/completions", json=payload), timeout)
    except TimeoutError:
        return Outcome(-1, time.perf_counter() - start, False)
    except httpx.HTTPError:
        return Outcome(0, time.perf_counter() - start, False)
    return Outcome(r.status_code, time.perf_counter() - start, "retry-after" in r.headers)


async def capacity(url: str, clients: int, seconds: float, tokens: int) -> float:
    """Completed requests per second with ``clients`` requests always in flight."""
    done, stop = 0, time.perf_counter() + seconds

    async def worker(w: int, client: httpx.AsyncClient) -> None:
        nonlocal done
        i = w
        while time.perf_counter() < stop:
            if (await one(client, url, body(i, tokens), 300)).status == 200:
                done += 1
            i += clients

    async with httpx.AsyncClient(timeout=None) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(w, client) for w in range(clients)))
        return done / (time.perf_counter() - start)


async def offer(url: str, rate: float, seconds: float, tokens: int, timeout: float) -> list:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        tasks, start, i = [], time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            tasks.append(asyncio.create_task(one(client, url, body(i, tokens), timeout)))
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        return await asyncio.gather(*tasks)


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.running = pid, [], True

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while self.running:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.samples.append(int(line.split()[1]) / 1024)
            time.sleep(0.5)


def summarize(outcomes: list[Outcome], rate: float, seconds: float, rss: list[float]) -> dict:
    served = [o for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status in (429, 503)]
    latencies = sorted(o.seconds for o in served)
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None
    return {
        "offered_per_s": rate,
        "duration_s": seconds,
        "requests": len(outcomes),
        "served": len(served),
        "refused_429_503": len(refused),
        "refused_with_retry_after": sum(o.retry_after for o in refused),
        "errors": sum(o.status not in (200, 429, 503, -1) for o in outcomes),
        "hung": sum(o.status == -1 for o in outcomes),
        "served_per_s": len(served) / seconds,
        "served_latency_p50_s": statistics.median(latencies) if latencies else None,
        "served_latency_p95_s": p95,
        "rss_mb_first": rss[0] if rss else None,
        "rss_mb_max": max(rss) if rss else None,
        "rss_mb_last": rss[-1] if rss else None,
    }


def run(args: argparse.Namespace) -> dict:
    port = free_port()
    proc = start_omniloom(port, args.dtype)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        cap = asyncio.run(capacity(url, args.probe_concurrency, args.probe_seconds, args.tokens))
        sampler = RssSampler(proc.pid)
        sampler.start()
        rate = cap * args.overload
        outcomes = asyncio.run(offer(url, rate, args.duration, args.tokens, args.request_timeout))
        sampler.running = False
        healthy = httpx.get(f"{url}/health", timeout=10).status_code == 200
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    result = summarize(outcomes, rate, args.duration, sampler.samples)
    return {"capacity_per_s": cap, "overload": args.overload, "healthy_after": healthy,
            "alive_after": alive, **result}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=120)
    p.add_argument("--overload", type=float, default=4)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--probe-concurrency", type=int, default=16)
    p.add_argument("--probe-seconds", type=float, default=20)
    p.add_argument("--request-timeout", type=float, default=300)
    p.add_argument("--dtype", default="float32", choices=WEIGHT_FORMATS)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "load.json"))
    return p


def main() -> None:
    args = parser().parse_args()
    result = run(args)
    for key, value in result.items():
        print(f"{key:<28}{value:.2f}" if isinstance(value, float) else f"{key:<28}{value}")
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
