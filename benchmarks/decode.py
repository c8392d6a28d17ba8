"""Single-stream greedy decode: omniloom's engine vs transformers' generate, same GGUF weights.

Prints a table and writes ``benchmarks/results/decode.json``. Each figure is the median of
``--runs`` runs of ``--tokens`` new tokens after a short chat prompt, on this machine's cores.
Usage: ``.venv/bin/python benchmarks/decode.py [--tokens 64] [--runs 3]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from omniloom.engine.engine import Done, Engine, Job
from omniloom.engine.sampling import SamplingParams
from omniloom.models.registry import load_model, smollm2_gguf_path
from omniloom.processing.prompt import Message, TextPart, build_prompt

PROMPT = "Write a short paragraph about the sea."


def omniloom_rate(dtype: str, tokens: int, runs: int) -> float:
    model = load_model(dtype=dtype)
    engine = Engine(model)
    prompt = build_prompt([Message("user", [TextPart(PROMPT)])], model.template, model.tokenizer)
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    rates = []
    for _ in range(runs):
        events: list = []
        engine.run_to_completion(Job(prompt, params, emit=events.append))
        stats = next(ev for ev in events if isinstance(ev, Done)).stats
        decode_s = stats.total_seconds - stats.time_to_first_token
        rates.append((stats.completion_tokens - 1) / decode_s)
    engine.shutdown()
    return statistics.median(rates)


def transformers_rate(dtype: torch.dtype, tokens: int, runs: int) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=dtype
    ).eval()
    ids = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=1, do_sample=False)
        first = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        rates.append((tokens - 1) / (time.perf_counter() - start - first))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = {
        "omniloom fp32": omniloom_rate("float32", args.tokens, args.runs),
        "omniloom bf16": omniloom_rate("bfloat16", args.tokens, args.runs),
        "transformers fp32": transformers_rate(torch.float32, args.tokens, args.runs),
        "transformers bf16": transformers_rate(torch.bfloat16, args.tokens, args.runs),
    }
    print(f"{'engine':<20}{'tok/s':>8}{'× transformers (same dtype)':>30}")
    for name, rate in rows.items():
        ref = rows[f"transformers {name.split()[1]}"]
        print(f"{name:<20}{rate:>8.1f}{rate / ref:>30.2f}")
    out = Path(__file__).parent / "results" / "decode.json"
    out.parent.mkdir(exist_ok=True)
    result = {
        "tokens": args.tokens,
        "runs": args.runs,
        "threads": torch.get_num_threads(),
        "tok_per_s": rows,
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
