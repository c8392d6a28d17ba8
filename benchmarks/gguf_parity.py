"""GGUF parity: omniloom against llama.cpp on the same quantized files, K-quants included.

The source GGUF (by default the SmolLM2-135M-Instruct Q4_1 file omniloom ships, as published)
and a copy of it in each llama.cpp type asked for (``llama-quantize --allow-requantize``) are
each served by llama.cpp's server, which generates greedily from a few chat prompts given to it
as token ids and reports the top log-probabilities before sampling at every step. omniloom
loads the same file (its own GGUF loader and dequantizer, fp32 weights) and scores the same
token sequence in one forward pass. Per file the table gives: for how many prompts omniloom's
greedy sequence is llama.cpp's (its argmax is llama.cpp's token at every step); how often its
argmax is llama.cpp's token; the mean and largest gap between the two log-probabilities of each
of llama.cpp's top tokens; ("vs F32") the mean gap between omniloom on this file and on the F32
copy, the quantization's own effect, which the gap to llama.cpp should stay well under; and
the tensor types the file holds. llama.cpp multiplies quantized blocks against activations it
quantizes to 8 bits (Q8_K beside K-quants), where omniloom dequantizes the weights first, so
the gaps hold both sides' rounding; the F32 row shows the floor. Writes
``benchmarks/results/gguf_parity.json``.

Usage: ``.venv/bin/python benchmarks/gguf_parity.py --llama-server BIN --llama-quantize BIN
[--types F32 Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K] [--tokens 32] [--source FILE] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import httpx
import torch
from gguf import GGUFReader
from serving import cpu_name, free_port, wait_healthy

from omniloom.models.registry import load_model, smollm2_gguf_path
from omniloom.processing.prompt import Message, TextPart, build_prompt

RESULTS = Path(__file__).parent / "results" / "gguf_parity.json"
QUESTIONS = (
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "List three uses of a paperclip.",
    "Explain in one sentence why the sky is blue.",
)
DEFAULT_TYPES = ("F32", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")


def quantized_copy(quantize: str, source: Path, qtype: str, directory: Path) -> Path:
    out = directory / f"{source.stem}.{qtype}.gguf"
    if not out.exists():
        cmd = [quantize, "--allow-requantize", str(source), str(out), qtype]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each type the file holds."""
    return dict(Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors))


def llama_greedy(url: str, ids: list[int], tokens: int) -> list[dict]:
    """llama.cpp's greedy steps: each chosen id with its top log-probabilities."""
    body = {
        "prompt": ids,
        "n_predict": tokens,
        "temperature": 0.0,
        "n_probs": 5,
        "ignore_eos": True,
        "cache_prompt": False,
    }
    reply = httpx.post(f"{url}/completion", json=body, timeout=300).json()
    return reply["completion_probabilities"]


@torch.inference_mode()
def omniloom_logprobs(model, ids: list[int]) -> torch.Tensor:
    """(len(ids), vocab) log-probabilities of the next token after each prefix."""
    net = model.vlm
    embeds = net.embed_ids(torch.tensor(ids))
    logits = net.backbone(embeds[None], positions=torch.arange(len(ids)))[0]
    return torch.log_softmax(logits.float(), dim=-1)


def compare(model, reference, url: str, tokens: int) -> dict:
    """Argmax agreement and log-probability gaps over every prompt and step, and beside them
    the gaps between omniloom on this file and on the F32 copy (the quantization's own)."""
    agree, steps, same, gaps, quantization = 0, 0, 0, [], []
    for question in QUESTIONS:
        messages = [Message("user", [TextPart(question)])]
        prompt = build_prompt(messages, model.template, model.tokenizer).token_ids
        theirs = llama_greedy(url, prompt, tokens)
        sequence = prompt + [step["id"] for step in theirs]
        ours = omniloom_logprobs(model, sequence)[len(prompt) - 1 :]
        unquantized = omniloom_logprobs(reference, sequence)[len(prompt) - 1 :]
        # llama.cpp's ignore_eos takes end-of-generation tokens out of the running
        allowed = ours.clone()
        allowed[:, list(model.tokenizer.stop_ids)] = float("-inf")
        matches = [
            int(row.argmax()) == step["id"] for row, step in zip(allowed, theirs, strict=False)
        ]
        agree, steps, same = agree + sum(matches), steps + len(matches), same + all(matches)
        for row, exact, step in zip(ours, unquantized, theirs, strict=False):
            for top in step["top_logprobs"]:
                gaps.append(abs(float(row[top["id"]]) - top["logprob"]))
                quantization.append(abs(float(row[top["id"]]) - float(exact[top["id"]])))
    return {
        "argmax_agreement": agree / steps,
        "steps": steps,
        "identical_sequences": same,
        "mean_logprob_gap": statistics.fmean(gaps),
        "max_logprob_gap": max(gaps),
        "mean_quantization_gap": statistics.fmean(quantization),
    }


def measure(path: Path, reference, server_bin: str, tokens: int) -> dict:
    port = free_port()
    threads = len(os.sched_getaffinity(0))
    cmd = [server_bin, "-m", str(path), "-t", str(threads), "-np", "1", "-c", "2048"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        model = load_model(weights=path, dtype="float32")
        return {"tensor_types": tensor_types(path)} | compare(model, reference, url, tokens)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def print_table(results: dict[str, dict]) -> None:
    header = f"{'type':<8}{'same greedy':>12}{'argmax agrees':>14}{'mean |Δlogp|':>14}"
    header += f"{'max |Δlogp|':>13}"
    print(f"{header}{'vs F32':>8}  tensors")
    for qtype, r in results.items():
        kinds = ", ".join(f"{k}×{n}" for k, n in sorted(r["tensor_types"].items()))
        print(
            f"{qtype:<8}{r['identical_sequences']:>8}/{len(QUESTIONS)}"
            f"{r['argmax_agreement']:>14.1%}{r['mean_logprob_gap']:>14.4f}"
            f"{r['max_logprob_gap']:>13.4f}{r['mean_quantization_gap']:>8.4f}  {kinds}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-server", required=True, help="llama.cpp's llama-server")
    parser.add_argument("--llama-quantize", required=True, help="llama.cpp's llama-quantize")
    parser.add_argument("--types", nargs="+", default=list(DEFAULT_TYPES))
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--source", type=Path, default=None, help="GGUF to requantize")
    parser.add_argument("--dir", type=Path, default=None, help="where the copies go")
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    source = args.source or smollm2_gguf_path()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="gguf-parity-"))
    directory.mkdir(parents=True, exist_ok=True)
    copy = lambda qtype: quantized_copy(args.llama_quantize, source, qtype, directory)  # noqa: E731
    reference = load_model(weights=copy("F32"), dtype="float32")
    results = {"source": measure(source, reference, args.llama_server, args.tokens)}
    for qtype in args.types:
        results[qtype] = measure(copy(qtype), reference, args.llama_server, args.tokens)
    print(f"{cpu_name()}, {source.name}, {args.tokens} tokens")
    print_table(results)
    record = {"cpu": cpu_name(), "source": source.name, "tokens": args.tokens}
    record["prompts"] = len(QUESTIONS)
    RESULTS.write_text(json.dumps(record | {"types": results}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
