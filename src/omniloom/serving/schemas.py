"""Request bodies of the OpenAI-compatible API (pydantic).

Content parts are kept loose here (``type`` plus the payload fields) so that an unsupported
part type gets our own clear error message from the converter rather than a union-validation
dump. Unknown top-level fields that change nothing are accepted and ignored, as OpenAI does
for fields it does not know; fields we do not implement yet are rejected in ``requests.py``.

Every value is checked against what the engine can take before anything runs: integers within
their ranges (seeds are 64-bit), finite numbers (Python's JSON parser accepts ``NaN`` and
``Infinity``), valid Unicode in every string (JSON's ``\ud800`` escape makes a lone surrogate)
and bounded nesting, anywhere in the body, extra fields included. Each failure is a 400 that
names the field.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from omniloom.errors import InvalidRequest, json_path

INT32_MAX = 2**31 - 1
MAX_NESTING = 64  # JSON levels in a body (schemas included)


def _problem(value: Any) -> str | None:
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (it holds an unpaired surrogate escape such as \\ud800)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, not {value}"
    return None


def check_json_values(body: Any) -> None:
    """Raise a 400 naming the first string that is not valid Unicode, number that is not
    finite, or value nested more than ``MAX_NESTING`` levels deep (keys are checked too)."""
    stack: list[tuple[Any, tuple]] = [(body, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_NESTING:
            raise InvalidRequest(
                f"{json_path(path)}: the body is nested more than {MAX_NESTING} levels deep.",
                param=json_path(path),
            )
        if (problem := _problem(value)) is not None:
            raise InvalidRequest(f"{json_path(path)} {problem}.", param=json_path(path))
        if isinstance(value, dict):
            for key, item in value.items():
                if _problem(key) is not None:
                    raise InvalidRequest(
                        f"A key in {json_path(path)} is not valid Unicode.", param=json_path(path)
                    )
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class InputAudio(BaseModel):
    """OpenAI's ``input_audio``: base64 ``data`` with its ``format``; or a ``url`` (http(s),
    data or file), fetched with the same checks as images."""

    data: str | None = None
    format: str | None = None
    url: str | None = None


class VideoURL(BaseModel):
    url: str


class VideoOptions(BaseModel):
    """omniloom's per-part video settings (vLLM's ``fps`` and ``max_frames`` names); a field
    left out takes the server's default."""

    model_config = ConfigDict(extra="forbid")

    fps: float | None = Field(default=None, gt=0, le=60)
    max_frames: int | None = Field(default=None, ge=1, le=256)
    strategy: Literal["uniform", "keyframes", "scene", "adaptive"] | None = None
    detail: Literal["low", "high", "auto"] | None = None
    pooling: bool | None = None  # merge near-identical consecutive frames
    audio: bool | None = None  # transcribe the sound track between the frames


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    image_url: ImageURL | None = None
    input_audio: InputAudio | None = None
    video_url: VideoURL | None = None
    video: VideoOptions | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _content_where_required(self) -> ChatMessage:
        """Only an assistant turn (one that called tools) may come without content."""
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content (a string or a list of parts)")
        return self


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    """What chat and text completions share: the model, the budget and the sampling knobs."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, le=INT32_MAX)
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, ge=0.01, le=10.0)  # 1e-300 overflows logits
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1, le=INT32_MAX)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # OpenAI's: a 64-bit int
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever (benchmarks)

    @model_validator(mode="before")
    @classmethod
    def _values_the_engine_can_take(cls, data: Any) -> Any:
        check_json_values(data)
        return data


class AudioOutput(BaseModel):
    """OpenAI's ``audio`` parameter: how a spoken answer is voiced and encoded."""

    voice: str
    format: Literal["wav", "mp3", "flac", "opus", "aac", "pcm16"]


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    tools: list[Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    perception: Literal["native", "cascade", "hybrid", "auto"] | None = None
    # how audio parts reach the model: its own encoder, or speech recognition's transcript
    audio_perception: Literal["native", "cascade"] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None

    @property
    def wants_audio(self) -> bool:
        return "audio" in (self.modalities or [])

    @property
    def asked_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def top_logprobs_wanted(self) -> int | None:
        """None: no logprobs; k: the sampled token's and the k most likely."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(SamplingFields):
    """OpenAI's legacy ``/v1/completions``: plain text in, text out (base models)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1, le=INT32_MAX)  # OpenAI's default
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=INT32_MAX)

    @property
    def asked_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def top_logprobs_wanted(self) -> int | None:
        return self.logprobs
