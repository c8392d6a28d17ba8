"""Gateway mode: the LLM step is an existing OpenAI-compatible server (llama.cpp's, vLLM,
SGLang, another omniloom), and omniloom does everything around it.

The server builds each prompt as always — fetching with its SSRF rules, safety checks, the
perception cascade that turns images and audio into words, the chat template, token and cost
accounting — and this engine sends the prompt's token ids to the upstream's
``/v1/completions`` (which takes a list of token ids as its prompt) with the request's sampling
settings, streaming the text back. The upstream must serve the same model, so that the ids mean
the same tokens. It takes text only: a prompt that would carry media tokens is refused, and the
server's default perception is the cascade. ``n`` above 1, ``response_format`` and log
probabilities are refused too.
"""

from __future__ import annotations

import json
import time

import httpx

from omniloom.engine.remote import RemoteJobEngine
from omniloom.engine.sampling import SamplingParams
from omniloom.engine.sequence import Delta, Done, Finished, Job, JobStats
from omniloom.errors import InvalidRequest, ServiceUnavailable

_FINISH = {"stop": "stop", "length": "length", "eos": "stop"}


class UpstreamEngine(RemoteJobEngine):
    def __init__(self, base_url: str, tokenizer, model: str, timeout_s: float = 600.0):
        super().__init__()
        self.url = base_url.rstrip("/") + "/completions"
        self.tokenizer = tokenizer  # counts the completion where the upstream reports no usage
        self.model = model
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10.0))

    async def events(self, job: Job):
        _check_supported(job)
        stats = JobStats(prompt_tokens=len(job.prompt.token_ids))
        body = self._body(job.prompt.token_ids, job.params)
        reason, written = "stop", ""
        try:
            async with self.client.stream("POST", self.url, json=body) as response:
                await _check_status(response, self.url)
                async for chunk in _chunks(response):
                    if job.cancelled.is_set():
                        return  # leaving the stream closes the upstream's connection
                    reason = self._read(chunk, stats, job, reason)
                    text = "".join(c.get("text") or "" for c in chunk.get("choices", []))
                    if text:
                        written += text
                        yield Delta(0, text)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"The upstream engine at {self.url} cannot be reached ({type(exc).__name__}).",
                code="upstream_unavailable",
            ) from exc
        stats.total_seconds = time.perf_counter() - job.submitted_at
        if not stats.completion_tokens and written:
            stats.completion_tokens = len(self.tokenizer.encode(written))
        yield Finished(0, reason, stats.completion_tokens)
        yield Done(stats)

    def _body(self, token_ids: list[int], params: SamplingParams) -> dict:
        body = {
            "model": self.model,
            "prompt": token_ids,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": list(params.stop),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        optional = {
            "seed": params.seed,
            "top_k": params.top_k or None,
            "min_p": params.min_p or None,
            "presence_penalty": params.presence_penalty or None,
            "frequency_penalty": params.frequency_penalty or None,
            "repetition_penalty": None
            if params.repetition_penalty == 1.0
            else params.repetition_penalty,
            "ignore_eos": params.ignore_eos or None,
        }
        return body | {k: v for k, v in optional.items() if v is not None}

    @staticmethod
    def _read(chunk: dict, stats: JobStats, job: Job, reason: str) -> str:
        """Record the chunk's timing and usage; the finish reason so far."""
        if not stats.time_to_first_token and chunk.get("choices"):
            stats.time_to_first_token = time.perf_counter() - job.submitted_at
        usage = chunk.get("usage") or {}
        if usage:
            stats.completion_tokens = usage.get("completion_tokens", stats.completion_tokens)
            details = usage.get("prompt_tokens_details") or {}
            stats.cached_tokens = details.get("cached_tokens") or 0
        for choice in chunk.get("choices", []):
            if choice.get("finish_reason"):
                reason = _FINISH.get(choice["finish_reason"], "stop")
        return reason


def _check_supported(job: Job) -> None:
    if job.prompt.spans:
        raise InvalidRequest(
            "In gateway mode the upstream engine takes text only: send images and audio with "
            "perception 'cascade' (the server's default here), which puts them in as words.",
            param="perception",
        )
    params = job.params
    refused = {
        "n": params.n > 1,
        "response_format": params.grammar is not None,
        "logprobs": params.logprobs is not None,
    }
    for name, asked in refused.items():
        if asked:
            raise InvalidRequest(f"'{name}' is not supported in gateway mode.", param=name)


async def _check_status(response: httpx.Response, url: str) -> None:
    if response.status_code < 400:
        return
    detail = (await response.aread()).decode(errors="replace")[:300]
    raise ServiceUnavailable(
        f"The upstream engine at {url} answered {response.status_code}: {detail}",
        code="upstream_error",
    )


async def _chunks(response: httpx.Response):
    """The JSON objects of a server-sent event stream, up to ``[DONE]``."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)
