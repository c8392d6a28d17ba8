"""Other families at real sizes: omniloom against transformers on the same weights.

Writes a random-weight checkpoint at a released model's shape with ``transformers`` itself
(bf16 safetensors, a small byte-level tokenizer, the family's chat template and preprocessor
config), then runs omniloom and ``transformers`` each in a process of its own on it, bf16
weights: greedy decode tok/s at 1 and 16 streams (decode only: the time of a one-token run,
its prefill, is subtracted), the vision encoder's ms per 448×448 image at the family's
default detail (Qwen2-VL: 256 merged tokens; SmolVLM: 4×4 tiles and the global view, 1088
tokens; pixel preprocessing excluded), and each process's peak RSS. Prints a table with the
ratios and writes ``benchmarks/results/models.json``. Each figure is the median of ``--runs``
runs. Usage: ``.venv/bin/python benchmarks/models.py [--shapes qwen2-vl-2b smolvlm-256m]
[--tokens 32] [--runs 3] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkpoint writer the parity tests use

from serving import cpu_name  # noqa: E402

from tests.models.tiny_checkpoints import idefics3, qwen2_vl  # noqa: E402

PROMPT = "Write a short paragraph about the sea."
STREAMS = (1, 16)
IMAGE_SIDE = 448
SHAPES = {  # config.json entries of the released checkpoints (the vocabulary kept full size)
    "qwen2-vl-2b": dict(
        family="qwen2-vl",
        text=dict(
            vocab_size=151936,
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rope_parameters={
                "rope_type": "default",
                "mrope_section": [16, 24, 24],
                "rope_theta": 1e6,
            },
        ),
        vision=dict(
            depth=32,
            embed_dim=1280,
            hidden_size=1536,
            num_heads=16,
            mlp_ratio=4,
            spatial_merge_size=2,
        ),
        config=dict(tie_word_embeddings=True),
    ),
    "smolvlm-256m": dict(
        family="smolvlm",
        text=dict(
            vocab_size=49280,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "rope_theta": 1e5},
            rms_norm_eps=1e-5,
        ),
        vision=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=512,
            patch_size=16,
        ),
        config=dict(scale_factor=4, tie_word_embeddings=False),
    ),
}


def write_checkpoint(shape: str, directory: Path) -> None:
    spec = SHAPES[shape]
    bf16 = dict(family=spec["family"], shape=spec, dtype=torch.bfloat16)
    if spec["family"] == "smolvlm":
        model, _ = idefics3(directory, tiles=4, **bf16)  # a 2048-pixel longest edge
    else:
        model, _ = qwen2_vl(directory, max_pixels=28 * 28 * 1280, **bf16)
    del model


def picture() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)


def median_seconds(run, runs: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def decode_rate(generate, streams: int, tokens: int, runs: int) -> float:
    """Tokens per second over all streams, the one-token (prefill) time subtracted."""
    full = median_seconds(lambda: generate(streams, tokens), runs)
    prefill = median_seconds(lambda: generate(streams, 1), runs)
    return streams * (tokens - 1) / (full - prefill)


def omniloom_worker(directory: Path, tokens: int, runs: int) -> dict:
    from omniloom.config import EngineSettings, ImageSettings, Limits
    from omniloom.engine.engine import Engine, Job
    from omniloom.engine.sampling import SamplingParams
    from omniloom.media.image import decode_image
    from omniloom.models.registry import load_model
    from omniloom.processing.prompt import Message, TextPart, build_prompt
    from tests.conftest import png_bytes

    model = load_model(weights=directory, dtype="bfloat16")
    engine = Engine(model, EngineSettings(max_batch=max(STREAMS)), start=False)
    prompt = build_prompt([Message("user", [TextPart(PROMPT)])], model.template, model.tokenizer)
    pixels = {"qwen2-vl": "patches", "qwen2.5-vl": "patches"}.get(model.family, "views")

    def generate(streams: int, count: int) -> None:
        params = SamplingParams(max_tokens=count, temperature=0.0, ignore_eos=True)
        engine.run_to_completion(
            *[Job(prompt, params, emit=lambda e: None) for _ in range(streams)]
        )

    rates = {s: decode_rate(generate, s, tokens, runs) for s in STREAMS}
    engine.shutdown()
    decoded = decode_image(png_bytes(picture()), Limits())
    item = model.processors["image"].prepare(decoded, "high", ImageSettings())
    encode = median_seconds(lambda: model.vlm.encode([item]), runs)
    preprocess = median_seconds(getattr(item, pixels), runs)
    return {
        "decode_tok_per_s": rates,
        "encode_ms": (encode - preprocess) * 1e3,
        "image_tokens": item.num_placeholders(),
        "prompt_tokens": len(prompt.token_ids),
    }


def qwen2_vl_encoder(model, directory: Path):
    """transformers' ViT on the preprocessed picture, and the picture's token count."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    images = Qwen2VLImageProcessorPil.from_pretrained(directory)(
        images=[picture()], return_tensors="pt"
    )
    patches, grid = images["pixel_values"].to(torch.bfloat16), images["image_grid_thw"]
    tokens = int(grid.prod()) // model.config.vision_config.spatial_merge_size**2
    return lambda: model.model.visual(patches, grid_thw=grid), tokens


def idefics3_encoder(model, directory: Path):
    """transformers' SigLIP and connector on the picture's views, and its token count."""
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    images = Idefics3ImageProcessorPil.from_pretrained(directory)(
        images=[picture()], return_tensors="pt"
    )
    pixels, mask = images["pixel_values"].to(torch.bfloat16), images["pixel_attention_mask"]
    tokens = pixels.shape[1] * model.model.image_seq_len
    return lambda: model.model.get_image_features(pixels, mask), tokens


def transformers_worker(directory: Path, tokens: int, runs: int) -> dict:
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(directory, dtype=torch.bfloat16).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
        add_generation_prompt=True,
        return_tensors="pt",
    )["input_ids"]

    @torch.inference_mode()
    def generate(streams: int, count: int) -> None:
        batch = ids.repeat(streams, 1)
        model.generate(
            input_ids=batch,
            attention_mask=torch.ones_like(batch),
            max_new_tokens=count,
            min_new_tokens=count,
            do_sample=False,
            eos_token_id=None,
        )

    rates = {s: decode_rate(generate, s, tokens, runs) for s in STREAMS}
    tiled = model.config.model_type in ("idefics3", "smolvlm")
    encode, image_tokens = (idefics3_encoder if tiled else qwen2_vl_encoder)(model, directory)
    with torch.inference_mode():
        seconds = median_seconds(encode, runs)
    return {
        "decode_tok_per_s": rates,
        "encode_ms": seconds * 1e3,
        "image_tokens": image_tokens,
        "prompt_tokens": ids.shape[1],
    }


WORKERS = {"omniloom": omniloom_worker, "transformers": transformers_worker}


def run_worker(name: str, directory: Path, args) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--checkpoint", str(directory)]
    command += ["--tokens", str(args.tokens), "--runs", str(args.runs)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def print_table(results: dict) -> None:
    """One row per measure; the ratio is always omniloom's speed-up (above 1: faster)."""
    print(f"{'shape':<14}{'measure':<26}{'omniloom':>10}{'transformers':>14}{'ratio':>7}")
    for shape, pair in results.items():
        ours, theirs = pair["omniloom"], pair["transformers"]
        for s in STREAMS:
            a, b = ours["decode_tok_per_s"][str(s)], theirs["decode_tok_per_s"][str(s)]
            print(
                f"{shape:<14}{f'decode {s} stream(s) tok/s':<26}{a:>10.1f}{b:>14.1f}{a / b:>7.2f}"
            )
        a, b = ours["encode_ms"], theirs["encode_ms"]
        print(f"{shape:<14}{'encode ms / image':<26}{a:>10.1f}{b:>14.1f}{b / a:>7.2f}")
        a, b = ours["peak_rss_mb"], theirs["peak_rss_mb"]
        print(f"{shape:<14}{'peak RSS MB':<26}{a:>10.0f}{b:>14.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the checkpoints here")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = WORKERS[args.worker](args.checkpoint, args.tokens, args.runs)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for shape in args.shapes:
            directory = (args.keep or Path(scratch)) / shape
            if not (directory / "config.json").exists():
                write_checkpoint(shape, directory)
            results[shape] = {name: run_worker(name, directory, args) for name in WORKERS}
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, bf16 weights, {args.tokens} tokens")
    print_table(results)
    write_results(results, args)


def write_results(results: dict, args) -> None:
    """Each shape's figures with the machine they came from, beside other shapes' earlier ones."""
    out = REPO / "benchmarks" / "results" / "models.json"
    recorded = json.loads(out.read_text()) if out.exists() else {}
    machine = {"cpu": cpu_name(), "threads": torch.get_num_threads()}
    for shape, pair in results.items():
        recorded[shape] = machine | {"tokens": args.tokens, "runs": args.runs} | pair
    out.write_text(json.dumps(recorded, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
