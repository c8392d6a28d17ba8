"""Single-stream greedy decode: omniloom vs transformers' generate vs llama.cpp, same weights.

omniloom runs fp32, bf16, fp16 and int8 weights (fp32 activations, our CPU kernels);
transformers fp32 and bf16; llama.cpp's ``llama-bench`` (``--llama-bench PATH`` with
``--llama-gguf FORMAT=FILE`` for F32, F16 and Q8_0 copies of the same checkpoint) the like-for-
like format: F32 for fp32, F16 for bf16 and fp16, Q8_0 for int8. The bound column is this
machine's memory read bandwidth (all threads) over the weight bytes one step streams.

Prints a table and writes ``benchmarks/results/decode.json``. Each figure is the median of
``--runs`` runs of ``--tokens`` new tokens after a short chat prompt, on this machine's cores.
Usage: ``.venv/bin/python benchmarks/decode.py [--tokens 64] [--runs 3] [--llama-bench BIN
--llama-gguf float32=f32.gguf --llama-gguf float16=f16.gguf --llama-gguf int8=q8_0.gguf]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch
from serving import memory_bandwidth_gbs

from omniloom.config import WEIGHT_FORMATS
from omniloom.engine.engine import Done, Engine, Job
from omniloom.engine.sampling import SamplingParams
from omniloom.models.quantize import PackedLinear
from omniloom.models.registry import load_model, smollm2_gguf_path
from omniloom.processing.prompt import Message, TextPart, build_prompt

PROMPT = "Write a short paragraph about the sea."


def bytes_per_token(backbone: torch.nn.Module) -> int:
    """Weight bytes one decode step streams: every linear layer and the output head."""
    total = 0
    for module in backbone.modules():
        if isinstance(module, torch.nn.Linear):
            total += module.weight.nbytes
        elif isinstance(module, PackedLinear):
            total += module.nbytes()
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


LLAMA_FORMAT = {"float32": "float32", "bfloat16": "float16", "float16": "float16", "int8": "int8"}


def llama_bench_rate(binary: str, gguf: str, tokens: int, runs: int) -> float:
    """llama.cpp's own decode rate (``tg``) on ``gguf`` with this machine's threads."""
    cmd = [binary, "-m", gguf, "-t", str(torch.get_num_threads()), "-p", "0", "-n", str(tokens)]
    cmd += ["-r", str(runs), "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--formats", nargs="+", default=list(WEIGHT_FORMATS))
    parser.add_argument("--llama-bench", help="path to llama.cpp's llama-bench binary")
    parser.add_argument("--llama-gguf", action="append", default=[], help="FORMAT=FILE")
    args = parser.parse_args()
    ours = {d: omniloom_rate(d, args.tokens, args.runs) for d in args.formats}
    reference = {
        "float32": transformers_rate(torch.float32, args.tokens, args.runs),
        "bfloat16": transformers_rate(torch.bfloat16, args.tokens, args.runs),
    }
    llama = {}
    for item in args.llama_gguf if args.llama_bench else []:
        fmt, path = item.split("=", 1)
        llama[fmt] = llama_bench_rate(args.llama_bench, path, args.tokens, args.runs)
    bandwidth = memory_bandwidth_gbs()
    print(f"memory read bandwidth {bandwidth:.1f} GB/s ({torch.get_num_threads()} threads)")
    print(
        f"{'weights':<10}{'tok/s':>8}{'transformers':>14}{'ratio':>7}{'llama.cpp':>11}{'ratio':>7}"
        f"{'MB/token':>10}{'bound':>7}"
    )
    rows = {}
    for dtype, (rate, nbytes) in ours.items():
        ref = reference["float32" if dtype == "float32" else "bfloat16"]
        lcpp = llama.get(LLAMA_FORMAT[dtype])
        bound = bandwidth * 1e9 / nbytes
        rows[dtype] = {
            "tok_per_s": rate,
            "transformers_tok_per_s": ref,
            "llama_cpp_tok_per_s": lcpp,
            "bound_tok_per_s": bound,
            "mb_per_token": nbytes / 1e6,
        }
        lcpp_cols = f"{lcpp:>11.1f}{rate / lcpp:>7.2f}" if lcpp else f"{'-':>11}{'-':>7}"
        print(
            f"{dtype:<10}{rate:>8.1f}{ref:>14.1f}{rate / ref:>7.2f}{lcpp_cols}"
            f"{nbytes / 1e6:>10.0f}{bound:>7.0f}"
        )
    out = Path(__file__).parent / "results" / "decode.json"
    out.parent.mkdir(exist_ok=True)
    result = {
        "tokens": args.tokens,
        "runs": args.runs,
        "threads": torch.get_num_threads(),
        "bandwidth_gbs": bandwidth,
        "llama_cpp_formats": LLAMA_FORMAT,
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
