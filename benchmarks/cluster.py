"""Cluster mode against the single process, by replica count, with and without affinity.

Starts, one after another, ``omniloom serve`` and ``omniloom serve --cluster local`` with
``--configs`` replica layouts, and against each measures:

- text throughput and median time to first token at 1 and 16 streams (``--tokens`` each,
  ``ignore_eos``, fresh prompts), the best of ``--repeats`` rounds;
- an image workload: ``--images`` distinct pictures, each asked about ``--asks`` times in
  shuffled order from new conversations, ``--concurrency`` at a time; the prefix-cache hit rate is the share
  of requests whose picture's KV came from the cache (``usage.prompt_tokens_details
  .cached_tokens`` covering its image tokens; each picture's first ask must miss), with the
  median request latency.

The projection to N machines assumes what the layout implies: engine replicas share no state
(each machine's engines serve ``throughput(1 machine)``), the ingress and encoder pools scale
on their own, and the network carries prompts and embeddings (51 × 576 fp32 values, 118 KB per
image tile) at far less than a 10 Gb/s link; so N machines give N × the best single-machine
cluster throughput measured here, times the cluster's measured efficiency against the single
process. Prints a table and writes ``benchmarks/results/cluster.json``.
Usage: ``.venv/bin/python benchmarks/cluster.py``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from serving import cpu_name, free_port, image_url, throughput, wait_healthy

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = {
    "single": None,
    "cluster 1+1+1": {"TEXT_REPLICAS": "1", "MEDIA_REPLICAS": "1", "ENCODER_REPLICAS": "1"},
    "cluster 2 text": {"TEXT_REPLICAS": "2", "MEDIA_REPLICAS": "1", "ENCODER_REPLICAS": "1"},
    "cluster 2 media": {"TEXT_REPLICAS": "1", "MEDIA_REPLICAS": "2", "ENCODER_REPLICAS": "1"},
    "cluster 2 media, no affinity": {
        "TEXT_REPLICAS": "1",
        "MEDIA_REPLICAS": "2",
        "ENCODER_REPLICAS": "1",
        "AFFINITY": "0",
    },
}


def start(layout: dict | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMNILOOM_PERCEPTION": "native", "OMNILOOM_CLUSTER_NUM_CPUS": "4"}
    env.update({f"OMNILOOM_CLUSTER_{k}": v for k, v in (layout or {}).items()})
    env["OMNILOOM_CLUSTER_MIN_REPLICAS"] = env["OMNILOOM_CLUSTER_MAX_REPLICAS"] = "2"  # fixed pools
    cmd = [sys.executable, "-m", "omniloom.cli", "serve", "--port", str(port)]
    if layout is not None:
        cmd += ["--cluster", "local"]
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return proc, url


def text_rows(url: str, tokens: int, repeats: int) -> dict:
    rows = {}
    for streams in (1, 16):
        runs = [
            asyncio.run(throughput(url, "omniloom-smol", streams, tokens, {}, r + 1))
            for r in range(repeats)
        ]
        best = max(runs, key=lambda r: r["tok_per_s"])
        rows[str(streams)] = {"tok_per_s": best["tok_per_s"], "ttft_s": best["ttft_median_s"]}
    return rows


async def _ask(client: httpx.AsyncClient, url: str, picture: str, question: str) -> dict:
    content = [
        {"type": "image_url", "image_url": {"url": picture, "detail": "low"}},
        {"type": "text", "text": question},
    ]
    body = {
        "model": "omniloom-smol",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 4,
        "temperature": 0,
    }
    start = time.perf_counter()
    r = await client.post(f"{url}/v1/chat/completions", json=body)
    r.raise_for_status()
    details = r.json()["usage"]["prompt_tokens_details"]
    return {"seconds": time.perf_counter() - start, **details}


async def image_sessions(url: str, images: int, asks: int, concurrency: int) -> dict:
    pictures = [image_url(1000 + i) for i in range(images)]
    work = [(p, f"Question {k}: what is it?") for p in pictures for k in range(asks)]
    random.Random(0).shuffle(work)
    results = []
    async with httpx.AsyncClient(timeout=600) as client:
        for i in range(0, len(work), concurrency):
            batch = work[i : i + concurrency]
            results += await asyncio.gather(*(_ask(client, url, p, q) for p, q in batch))
    hits = sum(r["cached_tokens"] >= r["image_tokens"] for r in results)
    return {
        "requests": len(results),
        "prefix_hit_rate": hits / len(results),
        "best_possible_hit_rate": (asks - 1) / asks,  # each picture's first ask must miss
        "latency_median_s": statistics.median(r["seconds"] for r in results),
    }


def measure(name: str, layout: dict | None, args) -> dict:
    proc, url = start(layout)
    try:
        asyncio.run(throughput(url, "omniloom-smol", 2, 8, {}))  # warm-up
        row = {"text": text_rows(url, args.tokens, args.repeats)}
        row["images"] = asyncio.run(image_sessions(url, args.images, args.asks, args.concurrency))
        return row
    finally:
        proc.terminate()
        proc.wait(timeout=180)


def projection(results: dict, machines: list[int]) -> dict:
    single = results["single"]["text"]["16"]["tok_per_s"]
    clusters = {k: v for k, v in results.items() if k != "single"}
    best = max(v["text"]["16"]["tok_per_s"] for v in clusters.values())
    return {
        "efficiency_vs_single": best / single,
        "tok_per_s_16_streams_per_machine": best,
        "projected_tok_per_s": {str(n): n * best for n in machines},
    }


def print_table(result: dict) -> None:
    print(result["cpu"])
    head = f"{'layout':<30}{'1 stream':>10}{'TTFT':>7}{'16 streams':>12}{'TTFT':>7}"
    print(head + f"{'image hit rate':>16}{'image p50':>11}")
    for name, row in result["layouts"].items():
        one, many, images = row["text"]["1"], row["text"]["16"], row["images"]
        print(
            f"{name:<30}{one['tok_per_s']:>10.1f}{one['ttft_s']:>6.2f}s{many['tok_per_s']:>12.1f}"
            f"{many['ttft_s']:>6.2f}s{images['prefix_hit_rate']:>15.0%}{images['latency_median_s']:>10.2f}s"
        )
    p = result["projection"]
    print(f"cluster / single at 16 streams: {p['efficiency_vs_single']:.2f}×")
    for n, tps in p["projected_tok_per_s"].items():
        print(f"projected, {n} machines like this one: {tps:.0f} tok/s at 16 streams each")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--asks", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4, help="image requests at once")
    parser.add_argument("--machines", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/cluster.json"))
    args = parser.parse_args(argv)
    if "single" not in args.layouts or len(args.layouts) < 2:
        parser.error("measure 'single' (the reference) and at least one cluster layout")
    results = {name: measure(name, LAYOUTS[name], args) for name in args.layouts}
    result = {
        "cpu": cpu_name(),
        "settings": vars(args),
        "layouts": results,
        "projection": projection(results, args.machines),
    }
    print_table(result)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
