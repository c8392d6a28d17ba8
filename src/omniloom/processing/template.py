"""Chat templates rendered with jinja2 exactly as ``transformers.apply_chat_template`` does.

Same sandbox, same ``trim_blocks``/``lstrip_blocks``, the same ``tojson``, ``raise_exception``
and ``strftime_now`` helpers, so a checkpoint's template produces the same text here as there.

Templates take message content in one of two shapes: a string (most text models, Qwen2-VL's
either) or a list of typed parts (SmolVLM, LLaVA: ``{"type": "text", "text": ...}`` and
``{"type": "image"}``, which the template writes as its media marker, e.g. ``<image>``).
``content_format`` tells which, by rendering a probe string once.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cached_property, lru_cache

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from omniloom.errors import InvalidRequest


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


class ChatTemplate:
    """A compiled chat template plus the special tokens templates commonly reference."""

    def __init__(
        self,
        source: str,
        bos_token: str = "",
        eos_token: str = "",
        media_markers: dict[str, str] | None = None,
        prompt_prefix: tuple[int, ...] = (),
        typed_parts: bool = False,
    ):
        self.source = source
        # ids a checkpoint's processor puts before a prompt that does not begin with the BOS
        self.prompt_prefix = prompt_prefix
        self.special = {"bos_token": bos_token, "eos_token": eos_token}
        self.media_markers = media_markers or {}  # modality → what list content renders it as
        self.typed_parts = typed_parts  # list content even where the template takes strings
        self._template = _compile(source)

    @cached_property
    def content_format(self) -> str:
        """``"string"`` where the template writes string content, ``"list"`` where it only
        writes content given as typed parts (or is always to be given them)."""
        if self.typed_parts:
            return "list"
        probe = "\x00probe\x00"
        try:
            text = self.render([{"role": "user", "content": probe}])
        except InvalidRequest:
            return "string"
        return "string" if probe in text else "list"

    def prefix_for(self, text: str) -> list[int]:
        """The ids that go before ``text``'s own: ``prompt_prefix`` unless the rendered text
        already begins with the BOS token, as ``transformers``' processors decide it."""
        bos = self.special["bos_token"]
        return [] if bos and text.startswith(bos) else list(self.prompt_prefix)

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
        """Render ``messages`` (each ``{"role", "content"}``) to prompt text."""
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                **self.special,
                **kwargs,
            )
        except jinja2.exceptions.TemplateError as exc:
            raise InvalidRequest(f"The chat template rejected these messages: {exc}") from exc
