"""Serving benchmark through HTTP: TTFT (text, image, same image again) and aggregate throughput.

Starts ``omniloom serve`` on a free loopback port and, when ``--llama-server PATH`` is given,
llama.cpp's server on the same SmolLM2-135M GGUF with ``-np`` parallel slots, then runs the
same load against each: ``--concurrency`` streams at once (default 1 4 16 32), each asking for
``--tokens`` completion tokens (``ignore_eos``) after a unique ~48-token prompt, with prompt
caching off for llama.cpp as in ``shared/reference/PERF.md``. Both servers stay up and take
turns, level by level, ``--repeats`` times (new prompts each time, so no prefix cache helps):
the table gives medians and the median of the paired ratios, so drift on a shared machine
hits both alike. Also measures time to first token
for a text prompt, an image prompt, and the same image prompt again (a prefix-cache hit), the
server's peak RSS, and this machine's memory read bandwidth (the decode bound at batch 1).
Prints a table and writes ``benchmarks/results/serving.json``.
Usage: ``.venv/bin/python benchmarks/serving.py [--llama-server build/bin/llama-server]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from omniloom.config import WEIGHT_FORMATS

REPO = Path(__file__).resolve().parents[1]
WORDS = [
    "river",
    "stone",
    "cloud",
    "lantern",
    "harbor",
    "meadow",
    "copper",
    "violin",
    "orchard",
    "falcon",
    "glacier",
]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prompt_text(i: int) -> str:
    rng = np.random.default_rng(i)
    words = " ".join(rng.choice(WORDS, 30))
    return f"Request {i}. Continue this list of words with more words: {words}"


async def stream_one(client: httpx.AsyncClient, url: str, body: dict) -> tuple[float, int]:
    """(time to first content, completion tokens) for one streamed chat request."""
    start, first, tokens = time.perf_counter(), None, 0
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c["delta"].get("content") for c in chunk.get("choices", [])):
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return first or float("nan"), tokens


async def throughput(
    url: str, model: str, streams: int, tokens: int, extra: dict, round_: int = 0
) -> dict:
    bodies = [
        {
            "model": model,
            "messages": [
                {"role": "user", "content": prompt_text(round_ * 100_000 + streams * 1000 + i)}
            ],
            "max_tokens": tokens,
            "temperature": 0,
            "ignore_eos": True,
            **extra,
        }
        for i in range(streams)
    ]
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(stream_one(client, url, b) for b in bodies))
        wall = time.perf_counter() - start
    total = sum(t for _, t in results)
    return {
        "streams": streams,
        "tok_per_s": total / wall,
        "ttft_median_s": statistics.median(f for f, _ in results),
        "completion_tokens": total,
    }


def image_url(seed: int) -> str:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def ttft(url: str, model: str, content, runs: int = 3) -> float:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    async with httpx.AsyncClient(timeout=600) as client:
        times = [(await stream_one(client, url, body))[0] for _ in range(runs)]
    return statistics.median(times)


async def ttft_rows(url: str, model: str) -> dict:
    rows = {"text": await ttft(url, model, prompt_text(7))}
    misses, hits = [], []
    for seed in range(3):
        content = [
            {"type": "image_url", "image_url": {"url": image_url(seed), "detail": "high"}},
            {"type": "text", "text": "What is in this image?"},
        ]
        misses.append(await ttft(url, model, content, runs=1))
        hits.append(await ttft(url, model, content, runs=1))
    rows["image (miss)"] = statistics.median(misses)
    rows["same image again (hit)"] = statistics.median(hits)
    return rows


def memory_bandwidth_gbs() -> float:
    """Read bandwidth with all of PyTorch's threads: a sum over 1 GiB, median of five."""
    import torch

    data = torch.ones(1 << 28, dtype=torch.float32)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        data.sum()
        times.append(time.perf_counter() - start)
    return data.nbytes / statistics.median(times) / 1e9


def start_omniloom(port: int, dtype: str, **settings: str) -> subprocess.Popen:
    """``omniloom serve`` on ``port``; ``settings`` are extra ``OMNILOOM_*`` variables. Images
    take the native path (the engine and the encoder, not OCR) unless ``perception`` says."""
    env = {**os.environ, "OMNILOOM_DTYPE": dtype, "OMNILOOM_ENGINE_MAX_BATCH": "32"}
    env["OMNILOOM_PERCEPTION"] = "native"
    env.update({f"OMNILOOM_{k.upper()}": v for k, v in settings.items()})
    cmd = [sys.executable, "-m", "omniloom.cli", "serve", "--port", str(port)]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL)


def start_llama(binary: str, port: int, gguf: Path, threads: int) -> subprocess.Popen:
    cmd = [binary, "-m", str(gguf), "-t", str(threads), "-np", "32", "-c", "32768"]
    cmd += ["--port", str(port), "--host", "127.0.0.1"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    model: str
    extra: dict = field(default_factory=dict)
    runs: dict[int, list[dict]] = field(default_factory=dict)  # streams → one row per round


def run_rounds(servers: list[Server], args) -> None:
    """Each concurrency level ``args.repeats`` times, the servers taking turns within a round."""
    for streams in args.concurrency:
        for round_ in range(args.repeats):
            for s in servers:
                row = asyncio.run(
                    throughput(s.url, s.model, streams, args.tokens, s.extra, round_ + 1)
                )
                s.runs.setdefault(streams, []).append(row)


def summary(server: Server) -> list[dict]:
    return [
        {
            "streams": streams,
            "tok_per_s": statistics.median(r["tok_per_s"] for r in rows),
            "tok_per_s_runs": [r["tok_per_s"] for r in rows],
            "ttft_median_s": statistics.median(r["ttft_median_s"] for r in rows),
        }
        for streams, rows in server.runs.items()
    ]


def paired_ratios(ours: Server, theirs: Server) -> dict[int, float]:
    """Median over rounds of our tok/s over theirs in the same round."""
    return {
        streams: statistics.median(
            a["tok_per_s"] / b["tok_per_s"] for a, b in zip(rows, theirs.runs[streams], strict=True)
        )
        for streams, rows in ours.runs.items()
    }


def print_table(results: list[dict], ratios: dict[int, float], bandwidth: float) -> None:
    print(f"memory read bandwidth {bandwidth:.1f} GB/s")
    for r in results:
        print(f"\n{r['engine']}  (peak RSS {r['peak_rss_mb']:.0f} MB)")
        for kind, seconds in r.get("ttft_s", {}).items():
            print(f"  TTFT {kind:<24}{seconds:>8.3f} s")
        print(f"  {'streams':>8}{'tok/s':>10}{'TTFT median (s)':>18}   runs")
        for row in r["throughput"]:
            runs = " ".join(f"{t:.1f}" for t in row["tok_per_s_runs"])
            print(
                f"  {row['streams']:>8}{row['tok_per_s']:>10.1f}{row['ttft_median_s']:>18.2f}"
                f"   {runs}"
            )
    for streams, ratio in ratios.items():
        print(f"omniloom / llama.cpp at {streams} streams: {ratio:.2f}x (median of paired rounds)")


def start_servers(args) -> list[Server]:
    from omniloom.models.registry import smollm2_gguf_path

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    servers = [
        Server(f"omniloom {args.dtype}", start_omniloom(port, args.dtype), url, "omniloom-smol")
    ]
    if args.llama_server:
        gguf = Path(args.llama_gguf) if args.llama_gguf else smollm2_gguf_path()
        port = free_port()
        try:
            proc = start_llama(args.llama_server, port, gguf, len(os.sched_getaffinity(0)))
        except OSError:
            servers[0].proc.terminate()
            raise
        url = f"http://127.0.0.1:{port}"
        servers.append(Server(f"llama.cpp {gguf.name}", proc, url, "x", {"cache_prompt": False}))
    return servers


def measure(servers: list[Server], args) -> tuple[list[dict], dict[int, float]]:
    try:
        for s in servers:
            wait_healthy(s.url, s.proc)
            asyncio.run(throughput(s.url, s.model, 2, 8, s.extra))  # warm-up
        ttft_s = asyncio.run(ttft_rows(servers[0].url, servers[0].model))
        run_rounds(servers, args)
        results = [
            {"engine": s.name, "throughput": summary(s), "peak_rss_mb": peak_rss_mb(s.proc.pid)}
            for s in servers
        ]
        results[0]["ttft_s"] = ttft_s
        ratios = paired_ratios(servers[0], servers[1]) if len(servers) > 1 else {}
        return results, ratios
    finally:
        for s in servers:
            s.proc.terminate()
            s.proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--repeats", type=int, default=3, help="rounds per concurrency level")
    parser.add_argument("--dtype", default="float32", choices=WEIGHT_FORMATS)
    parser.add_argument("--llama-server", help="path to llama.cpp's llama-server binary")
    parser.add_argument("--llama-gguf", help="GGUF for llama.cpp (default: the shipped Q4_1)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serving.json"))
    args = parser.parse_args()
    results, ratios = measure(start_servers(args), args)
    bandwidth = memory_bandwidth_gbs()
    print_table(results, ratios, bandwidth)
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    body = {"bandwidth_gbs": bandwidth, "results": results, "paired_ratio": ratios}
    out.write_text(json.dumps(body, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
