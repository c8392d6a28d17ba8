"""GGUF parity: omniloom against llama.cpp on the same quantized files, K-quants included.

The source GGUF (by default the SmolLM2-135M-Instruct Q4_1 file omniloom ships, as published)
and a copy of it in each llama.cpp type asked for (``llama-quantize --allow-requantize``) are
each served by llama.cpp's server, which generates greedily from a few chat prompts given to it
as token ids and reports the top log-probabilities before sampling at every step. omniloom
loads the same file (its own GGUF loader and dequantizer, fp32 weights) and scores the same
token sequence in one forward pass. Per file the table gives: for how many prompts llama.cpp's
``/tokenize`` gives omniloom's prompt ids for the rendered chat template; for how many omniloom's
greedy sequence is llama.cpp's (its argmax is llama.cpp's token at every step); how often its
argmax is llama.cpp's token; the mean and largest gap between the two log-probabilities of each
of llama.cpp's top tokens; ("vs F32") the mean gap between omniloom on this file and on the F32
copy, the quantization's own effect, which the gap to llama.cpp should stay well under; and
the tensor types the file holds. With ``--gemma3-converter`` the source is instead a tiny
random Gemma 3 (SentencePiece vocabulary, sliding-window layers) that llama.cpp's own
``convert_hf_to_gguf.py`` writes from a ``transformers`` checkpoint. llama.cpp multiplies quantized blocks against activations it
quantizes to 8 bits (Q8_K beside K-quants), where omniloom dequantizes the weights first, so
the gaps hold both sides' rounding; the F32 row shows the floor. Writes
``benchmarks/results/gguf_parity.json``.

Usage: ``.venv/bin/python benchmarks/gguf_parity.py --llama-server BIN --llama-quantize BIN
[--types F32 Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K] [--tokens 32] [--source FILE | --gemma3-converter
convert_hf_to_gguf.py] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx
import torch
from gguf import GGUFReader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkpoint writer the parity tests use

from serving import cpu_name, free_port, wait_healthy  # noqa: E402

from omniloom.models.registry import load_model, smollm2_gguf_path  # noqa: E402
from omniloom.models.tokenizer import TokenType  # noqa: E402
from omniloom.processing.prompt import Message, TextPart, build_prompt  # noqa: E402
from tests.models.tiny_checkpoints import gemma3_for_llama_cpp  # noqa: E402

RESULTS = Path(__file__).parent / "results"
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


def converted_gemma3(converter: Path, directory: Path) -> Path:
    """The tiny Gemma 3 as llama.cpp's converter writes it (F32), with its own ``gguf-py``."""
    out = directory / "tiny-gemma3.gguf"
    checkpoint = gemma3_for_llama_cpp(directory / "tiny-gemma3-hf")
    cmd = [sys.executable, str(converter), str(checkpoint), "--outtype", "f32", "--outfile"]
    environment = os.environ | {"PYTHONPATH": str(converter.parent / "gguf-py")}
    subprocess.run([*cmd, str(out)], check=True, env=environment, capture_output=True)
    return out


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each type the file holds."""
    return dict(Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors))


def llama_tokens(url: str, text: str) -> list[int]:
    """llama.cpp's ids for a rendered prompt (its special tokens parsed, nothing added)."""
    body = {"content": text, "add_special": False, "parse_special": True}
    return httpx.post(f"{url}/tokenize", json=body, timeout=60).json()["tokens"]


def llama_greedy(url: str, ids: list[int], tokens: int, banned: list[int]) -> tuple[list, list]:
    """llama.cpp's greedy ids (``banned`` ids never chosen), and its top log-probabilities
    (of the raw logits) for the steps it reports them on, in order. It holds back a step whose
    text ends in the middle of a UTF-8 character and later reports only the step that completes
    it, so entries are taken up to the first such gap."""
    body = {
        "prompt": ids,
        "n_predict": tokens,
        "temperature": 0.0,
        "n_probs": 5,
        "ignore_eos": True,
        "cache_prompt": False,
        "return_tokens": True,
        "logit_bias": [[token, False] for token in banned],
    }
    reply = httpx.post(f"{url}/completion", json=body, timeout=300).json()
    chosen, reported = reply["tokens"], []
    for entry, token in zip(reply.get("completion_probabilities", []), chosen, strict=False):
        if entry["id"] != token or "\ufffd" in entry["token"]:
            break
        reported.append(entry["top_logprobs"])
    return chosen, reported


@torch.inference_mode()
def omniloom_logprobs(model, ids: list[int]) -> torch.Tensor:
    """(len(ids), vocab) log-probabilities of the next token after each prefix."""
    net = model.vlm
    embeds = net.embed_ids(torch.tensor(ids))
    logits = net.backbone(embeds[None], positions=torch.arange(len(ids)))[0]
    return torch.log_softmax(logits.float(), dim=-1)


def compare_prompt(model, reference, url: str, question: str, tokens: int) -> dict:
    """One chat prompt: whether the prompt ids agree, omniloom's argmax against llama.cpp's
    choice at each greedy step, and the log-probability gaps at the reported steps (to
    llama.cpp, and to omniloom on the F32 copy). A SentencePiece vocabulary's byte tokens are
    banned on both sides: a random model picks them often, and llama.cpp reports nothing for
    text that ends mid-character."""
    messages = [Message("user", [TextPart(question)])]
    prompt = build_prompt(messages, model.template, model.tokenizer).token_ids
    rendered = model.template.render([{"role": "user", "content": question}])
    types = model.tokenizer.spec.token_types
    banned = [i for i, kind in enumerate(types) if kind == TokenType.BYTE]
    chosen, reported = llama_greedy(url, prompt, tokens, banned)
    ours = omniloom_logprobs(model, prompt + chosen)[len(prompt) - 1 : -1]
    exact = omniloom_logprobs(reference, prompt + chosen)[len(prompt) - 1 : -1]
    allowed = ours.clone()  # llama.cpp's ignore_eos takes end-of-generation tokens out too
    allowed[:, [*model.tokenizer.stop_ids, *banned]] = float("-inf")
    tops = [(step, top["id"], top["logprob"]) for step, row in enumerate(reported) for top in row]
    return {
        "same_ids": llama_tokens(url, rendered) == prompt,
        "matches": [int(row.argmax()) == t for row, t in zip(allowed, chosen, strict=True)],
        "reported": len(reported),
        "gaps": [abs(float(ours[step, t]) - logprob) for step, t, logprob in tops],
        "quantization": [abs(float(ours[step, t] - exact[step, t])) for step, t, _ in tops],
    }


def compare(model, reference, url: str, tokens: int) -> dict:
    """Every prompt's comparison, summed up."""
    parts = [compare_prompt(model, reference, url, q, tokens) for q in QUESTIONS]
    matches = [m for part in parts for m in part["matches"]]
    gaps = [g for part in parts for g in part["gaps"]]
    return {
        "same_prompt_ids": sum(part["same_ids"] for part in parts),
        "argmax_agreement": sum(matches) / len(matches),
        "steps": len(matches),
        "steps_with_logprobs": sum(part["reported"] for part in parts),
        "identical_sequences": sum(all(part["matches"]) for part in parts),
        "mean_logprob_gap": statistics.fmean(gaps),
        "max_logprob_gap": max(gaps),
        "mean_quantization_gap": statistics.fmean(
            q for part in parts for q in part["quantization"]
        ),
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
    header = f"{'type':<8}{'same ids':>9}{'same greedy':>12}{'argmax agrees':>14}"
    header += f"{'mean |Δlogp|':>14}"
    header += f"{'max |Δlogp|':>13}"
    print(f"{header}{'vs F32':>8}  tensors")
    for qtype, r in results.items():
        kinds = ", ".join(f"{k}×{n}" for k, n in sorted(r["tensor_types"].items()))
        print(
            f"{qtype:<8}{r['same_prompt_ids']:>7}/{len(QUESTIONS)}"
            f"{r['identical_sequences']:>10}/{len(QUESTIONS)}"
            f"{r['argmax_agreement']:>14.1%}{r['mean_logprob_gap']:>14.4f}"
            f"{r['max_logprob_gap']:>13.4f}{r['mean_quantization_gap']:>8.4f}  {kinds}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-server", required=True, help="llama.cpp's llama-server")
    parser.add_argument("--llama-quantize", required=True, help="llama.cpp's llama-quantize")
    parser.add_argument("--types", nargs="+", default=list(DEFAULT_TYPES))
    parser.add_argument("--tokens", type=int, default=32)
    origin = parser.add_mutually_exclusive_group()
    origin.add_argument("--source", type=Path, default=None, help="GGUF to requantize")
    origin.add_argument("--gemma3-converter", type=Path, help="llama.cpp's convert_hf_to_gguf.py")
    parser.add_argument("--dir", type=Path, default=None, help="where the copies go")
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    directory = args.dir or Path(tempfile.mkdtemp(prefix="gguf-parity-"))
    directory.mkdir(parents=True, exist_ok=True)
    source = args.source or smollm2_gguf_path()
    if args.gemma3_converter:
        source = converted_gemma3(args.gemma3_converter, directory)
    copy = lambda qtype: quantized_copy(args.llama_quantize, source, qtype, directory)  # noqa: E731
    reference = load_model(weights=copy("F32"), dtype="float32")
    results = {"source": measure(source, reference, args.llama_server, args.tokens)}
    for qtype in args.types:
        results[qtype] = measure(copy(qtype), reference, args.llama_server, args.tokens)
    print(f"{cpu_name()}, {source.name}, {args.tokens} tokens")
    print_table(results)
    record = {"cpu": cpu_name(), "source": source.name, "tokens": args.tokens}
    record["prompts"] = len(QUESTIONS)
    out = RESULTS / ("gguf_parity_gemma3.json" if args.gemma3_converter else "gguf_parity.json")
    out.write_text(json.dumps(record | {"types": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
