"""Weight formats side by side: text quality, single-stream decode over HTTP, and start-up time.

For each of ``--formats`` (default fp32, bf16, int8), in one run on one machine:

- text quality (``omniloom.eval.text_check``): next-token accuracy and NLL on held-out prose,
  and, against fp32, top-1 agreement and identical greedy continuations;
- start-up: ``omniloom serve`` from launch to a healthy ``/health``, first with an empty
  converted-weights cache (the GGUF file is converted) and then ``--starts`` times with it
  (the median is reported);
- decode: one stream of ``--tokens`` tokens over HTTP, the servers taking turns for
  ``--repeats`` rounds; the median tok/s and the median of each round's ratio to fp32.

Also says which format ``--dtype auto`` picks on this machine. The vision suite per format is
``omniloom eval --suite vision --dtype FORMAT`` (its numbers are in the README).
Prints a table and writes ``benchmarks/results/weight_formats.json``.
Usage: ``.venv/bin/python benchmarks/weight_formats.py``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from serving import cpu_name, free_port, start_omniloom, throughput

from omniloom.config import WEIGHT_FORMATS

REPO = Path(__file__).resolve().parents[1]


def text_quality(formats: list[str], count: int, length: int, continue_tokens: int) -> dict:
    from omniloom.eval import text_check
    from omniloom.models.registry import load_model

    rows, reference = {}, None
    for fmt in formats:
        model = load_model(dtype=fmt)
        token_windows = text_check.windows(model.tokenizer, count, length)
        scores = text_check.score(model, token_windows, continue_tokens)
        reference = reference or scores
        rows[fmt] = {
            "next_token_accuracy": scores.next_token_accuracy,
            "nll": scores.nll,
            **text_check.agreement(scores, reference),
        }
        del model
        gc.collect()
    return rows


def time_to_healthy(fmt: str, cache_dir: Path) -> tuple[float, subprocess.Popen, str]:
    """Seconds from launch to a healthy server, the server's process and its URL."""
    port = free_port()
    start = time.perf_counter()
    proc = start_omniloom(port, fmt, cache_dir=str(cache_dir))
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"omniloom serve --dtype {fmt} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.perf_counter() - start, proc, url
        except httpx.HTTPError:
            time.sleep(0.05)


def start_ups(fmt: str, cache_dir: Path, later: int) -> dict:
    times = []
    for _ in range(1 + later):
        seconds, proc, _ = time_to_healthy(fmt, cache_dir)
        times.append(seconds)
        proc.terminate()
        proc.wait(timeout=60)
    return {"first_start_s": times[0], "later_start_s": statistics.median(times[1:])}


def decode_rounds(formats: list[str], cache_dir: Path, tokens: int, repeats: int) -> dict:
    servers = {}
    try:
        for fmt in formats:
            _, proc, url = time_to_healthy(fmt, cache_dir)
            servers[fmt] = (proc, url)
            asyncio.run(throughput(url, "omniloom-smol", 1, 8, {}))  # warm-up
        runs = {fmt: [] for fmt in formats}
        for round_ in range(repeats):
            for fmt, (_, url) in servers.items():
                row = asyncio.run(throughput(url, "omniloom-smol", 1, tokens, {}, round_ + 1))
                runs[fmt].append(row["tok_per_s"])
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=60)
    base = runs[formats[0]]
    return {
        fmt: {
            "tok_per_s": statistics.median(r),
            "tok_per_s_runs": r,
            "ratio": statistics.median(a / b for a, b in zip(r, base, strict=True)),
        }
        for fmt, r in runs.items()
    }


def print_table(result: dict) -> None:
    print(f"{result['cpu']}; --dtype auto here: {result['auto']}")
    head = ("format", "next-tok acc", "NLL", "top-1 = fp32", "same greedy", "decode tok/s")
    print(f"{head[0]:<10}{head[1]:>13}{head[2]:>8}{head[3]:>14}{head[4]:>13}{head[5]:>14}", end="")
    print(f"{'× fp32':>8}{'1st start':>11}{'later':>8}")
    for fmt, row in result["formats"].items():
        print(
            f"{fmt:<10}{row['next_token_accuracy']:>12.1f}%{row['nll']:>8.3f}"
            f"{row['top1_agreement']:>13.1f}%{row['identical_continuations']:>12.1f}%"
            f"{row['tok_per_s']:>14.1f}{row['ratio']:>7.2f}×"
            f"{row['first_start_s']:>10.1f}s{row['later_start_s']:>7.1f}s"
        )


def main(argv: list[str] | None = None) -> dict:
    from omniloom.models.specs.base import resolve_weight_format

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--formats", nargs="+", default=["float32", "bfloat16", "int8"])
    parser.add_argument("--windows", type=int, default=64, help="text windows scored")
    parser.add_argument("--length", type=int, default=128, help="tokens per window")
    parser.add_argument("--continue-tokens", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128, help="tokens per decode request")
    parser.add_argument("--repeats", type=int, default=5, help="decode rounds")
    parser.add_argument("--starts", type=int, default=3, help="start-ups with a warm cache")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/weight_formats.json"))
    args = parser.parse_args(argv)
    unknown = set(args.formats) - set(WEIGHT_FORMATS)
    if unknown:
        parser.error(f"unknown format {sorted(unknown)[0]}; choose from {WEIGHT_FORMATS}")

    rows = text_quality(args.formats, args.windows, args.length, args.continue_tokens)
    with tempfile.TemporaryDirectory() as cache:
        for fmt in args.formats:
            rows[fmt] |= start_ups(fmt, Path(cache), args.starts)
        decode = decode_rounds(args.formats, Path(cache), args.tokens, args.repeats)
    for fmt in args.formats:
        rows[fmt] |= decode[fmt]
    result = {
        "cpu": cpu_name(),
        "auto": resolve_weight_format("auto"),
        "settings": vars(args),
        "formats": rows,
    }
    print_table(result)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
