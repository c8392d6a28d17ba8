"""OpenAI-shaped response bodies and stream chunks for chat and text completions."""

from __future__ import annotations

import json
import time
import uuid

from omniloom.engine.sequence import TokenLogprob
from omniloom.processing.prompt import Prompt

MODALITIES = ("text", "image", "audio", "video")


def completion_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt: Prompt, completion_tokens: int, cached_tokens: int = 0) -> dict:
    by_modality = prompt.tokens_by_modality()
    details = {"cached_tokens": cached_tokens}
    details.update({f"{m}_tokens": by_modality.get(m, 0) for m in MODALITIES})
    prompt_tokens = len(prompt.token_ids)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"text_tokens": completion_tokens, "audio_tokens": 0},
    }


def job_usage(prompt: Prompt, stats) -> dict:
    """``usage`` of a finished job from its engine stats."""
    return usage(prompt, stats.completion_tokens, stats.cached_tokens)


def stage_timings(before_engine: dict[str, float], stats) -> dict[str, float]:
    """omniloom's ``timings`` extension: seconds by stage for one request. ``fetch`` and
    ``preprocess`` (decoding, sampling, tokenizing) come before the engine; ``prefill`` is the
    time to the first token less the queue and the encoder; ``decode`` the rest."""
    prefill = stats.time_to_first_token - stats.queue_seconds - stats.encoder_seconds
    stages = {
        **before_engine,
        "queue": stats.queue_seconds,
        "encode": stats.encoder_seconds,
        "prefill": max(0.0, prefill),
        "decode": stats.total_seconds - stats.time_to_first_token,
        "time_to_first_token": stats.time_to_first_token,
        "total": stats.total_seconds,
    }
    return {stage: round(seconds, 4) for stage, seconds in stages.items()}


def logprobs_content(entries: list[TokenLogprob], tokenizer) -> list[dict]:
    """OpenAI's ``choices[].logprobs.content`` items for sampled tokens."""

    def item(token_id: int, logprob: float) -> dict:
        text = tokenizer.decode([token_id], skip_special=False)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return [
        {**item(e.token_id, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]}
        for e in entries
    ]


def completion_body(
    cid: str,
    model: str,
    texts: list[str],
    reasons: list[str],
    usage_: dict,
    logprobs: list[list[dict]] | None = None,
) -> dict:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reasons[i],
                "logprobs": {"content": logprobs[i]} if logprobs else None,
            }
            for i, text in enumerate(texts)
        ],
        "usage": usage_,
    }


def chunk(
    cid: str,
    model: str,
    created: int,
    choices: list[dict],
    usage_: dict | None = None,
    timings: dict | None = None,
) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage_ is not None:
        body["usage"] = usage_
    if timings is not None:
        body["timings"] = timings
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def delta_choice(
    index: int, delta: dict, finish_reason: str | None = None, logprobs: list[dict] | None = None
) -> dict:
    return {
        "index": index,
        "delta": delta,
        "finish_reason": finish_reason,
        "logprobs": {"content": logprobs} if logprobs else None,
    }


def legacy_logprobs(entries: list[TokenLogprob], tokenizer, offset: int) -> dict:
    """``/v1/completions``' logprobs: tokens, their logprobs, top alternatives, text offsets."""
    tokens = [tokenizer.decode([e.token_id], skip_special=False) for e in entries]
    offsets, at = [], offset
    for token in tokens:
        offsets.append(at)
        at += len(token)
    top = [_by_text(e.top, tokenizer) for e in entries]
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": top,
        "text_offset": offsets,
    }


def _by_text(alternatives: list[tuple[int, float]], tokenizer) -> dict[str, float]:
    """Top alternatives keyed by their text, as OpenAI's legacy format has them; tokens that
    decode alike (bytes of one UTF-8 character, say) keep the likeliest one's logprob."""
    top: dict[str, float] = {}
    for token_id, logprob in alternatives:
        text = tokenizer.decode([token_id], skip_special=False)
        top[text] = max(logprob, top.get(text, logprob))
    return top


def text_choice(index: int, text: str, reason: str | None, logprobs: dict | None) -> dict:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}


def text_completion(cid: str, model: str, choices: list[dict], usage_: dict | None) -> dict:
    body = {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body
