"""Single-stream greedy decode: omniloom's engine vs transformers' generate, same GGUF weights.

omniloom runs fp32, bf16 and int8 weights (bf16 activations); transformers fp32 and bf16. The
bound column is this machine's memory read bandwidth over the weight bytes one step streams.

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
from serving import memory_bandwidth_gbs

from omniloom.engine.engine import Done, Engine, Job
from omniloom.engine.sampling import SamplingParams
from omniloom.models.quantize import Int8Linear
from omniloom.models.registry import load_model, smollm2_gguf_path
from omniloom.processing.prompt import Message, TextPart, build_prompt

PROMPT = "Write a short paragraph about the sea."


def bytes_per_token(backbone: torch.nn.Module) -> int:
    """Weight bytes one decode step streams: every linear layer and the output head."""
    total = 0
    for module in backbone.modules():
        if isinstance(module, torch.nn.Linear):
            total += module.weight.nbytes
        elif isinstance(module, Int8Linear):
            total += module.qweight.nbytes + module.scales.nbytes
    return total


def omniloom_rate(dtype: str, tokens: int, runs: int) -> tuple[float, int]:
    model = load_model(dtype=dtype)
    engine = Engine(model, start=False)  # steps on this (the main) thread
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
    return statistics.median(rates), bytes_per_token(model.vlm.backbone)


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
    ours = {d: omniloom_rate(d, args.tokens, args.runs) for d in ("float32", "bfloat16", "int8")}
    reference = {
        "float32": transformers_rate(torch.float32, args.tokens, args.runs),
        "bfloat16": transformers_rate(torch.bfloat16, args.tokens, args.runs),
    }
    bandwidth = memory_bandwidth_gbs()
    print(f"memory read bandwidth {bandwidth:.1f} GB/s")
    header = (
        f"{'weights':<10}{'tok/s':>8}{'transformers':>14}{'ratio':>7}{'MB/token':>10}{'bound':>7}"
    )
    print(header)
    rows = {}
    for dtype, (rate, nbytes) in ours.items():
        ref = reference["float32" if dtype == "float32" else "bfloat16"]
        bound = bandwidth * 1e9 / nbytes
        rows[dtype] = {"tok_per_s": rate, "transformers_tok_per_s": ref, "bound_tok_per_s": bound}
        print(
            f"{dtype:<10}{rate:>8.1f}{ref:>14.1f}{rate / ref:>7.2f}{nbytes / 1e6:>10.0f}{bound:>7.0f}"
        )
    out = Path(__file__).parent / "results" / "decode.json"
    out.parent.mkdir(exist_ok=True)
    result = {
        "tokens": args.tokens,
        "runs": args.runs,
        "threads": torch.get_num_threads(),
        "bandwidth_gbs": bandwidth,
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
