"""Structured output: ``response_format`` compiled to a token-level grammar with xgrammar.

``json_object`` is the schema ``{"type": "object"}``; ``json_schema`` compiles the given schema
(strict, properties in the schema's order, no free whitespace runs, so a small model cannot
stall in padding). At each step the
matcher's bitmask removes every token that would break the grammar, so the output always
parses — unless ``max_tokens`` cuts it short, which finishes with ``length``, as OpenAI does.

Schemas are bounded and checked first (``schema_check``), then compiled on the compiler's own
thread, never the engine's; a compile that outlasts ``schema_compile_timeout_s`` is answered
with a 400 (it finishes in the background and is cached, so it does not run twice), and
xgrammar's errors reach the client as plain sentences, without its C++ log prefixes.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import torch
import xgrammar as xgr

from omniloom.config import Limits
from omniloom.engine.schema_check import check_schema, refuse
from omniloom.errors import InvalidRequest
from omniloom.lru import LRU

_LOG_PREFIX = re.compile(r"\[[\d:]+\] [^:]+:\d+: (Check failed: .*? is false: ?)?")


def plain_error(exc: Exception) -> str:
    """xgrammar's message without its timestamp, source file and internal check."""
    message = _LOG_PREFIX.sub("", str(exc)).strip().rstrip(".")
    return message or "xgrammar could not build a grammar for it"


class GrammarCompiler:
    def __init__(self, vocab: list[str], stop_ids: list[int], vocab_size: int):
        self.info = xgr.TokenizerInfo(
            vocab,
            vocab_type=xgr.VocabType.BYTE_LEVEL,
            vocab_size=vocab_size,
            stop_token_ids=stop_ids,
        )
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=1)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="grammar")
        self._compiled: LRU[xgr.CompiledGrammar] = LRU(64)

    @classmethod
    def for_model(cls, model) -> GrammarCompiler:
        """The compiler for a loaded model's tokenizer and output vocabulary."""
        tokenizer = model.tokenizer
        vocab_size = model.vlm.backbone.config.vocab_size
        return cls(tokenizer.vocab_list(), sorted(tokenizer.stop_ids), vocab_size)

    def compile_schema(self, schema_json: str, timeout_s: float) -> xgr.CompiledGrammar:
        """The compiled grammar of a schema (cached), or a 400 past ``timeout_s``."""
        if (cached := self._compiled.get(schema_json)) is not None:
            return cached
        work = self._thread.submit(
            self._compiled.get_or_compute, schema_json, lambda: self._compile(schema_json)
        )
        try:
            return work.result(timeout=timeout_s)
        except FutureTimeout:
            raise refuse(
                f"the schema did not compile within {timeout_s:g} s; use fewer optional "
                "properties, shorter enums or smaller length bounds."
            ) from None
        except Exception as exc:  # xgrammar raises RuntimeError, and others on odd input
            raise refuse(f"the schema could not be compiled: {plain_error(exc)}.") from None

    def _compile(self, schema_json: str) -> xgr.CompiledGrammar:
        return self._compiler.compile_json_schema(schema_json, any_whitespace=False)

    def compile(self, response_format: dict | None, limits: Limits) -> xgr.CompiledGrammar | None:
        kind = (response_format or {}).get("type", "text")
        timeout_s = limits.schema_compile_timeout_s
        if kind == "text":
            return None
        if kind == "json_object":  # as OpenAI: a JSON object, not any JSON value
            return self.compile_schema('{"type": "object"}', timeout_s)
        if kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            if not isinstance(spec, dict) or "schema" not in spec:
                raise InvalidRequest(
                    "response_format json_schema needs a 'json_schema.schema' object.",
                    param="response_format",
                )
            return self.compile_schema(check_schema(spec["schema"], limits), timeout_s)
        raise InvalidRequest(
            f"response_format type '{kind}' is not supported; use text, json_object or json_schema.",
            param="response_format",
        )


class GrammarConstraint:
    """One choice's matcher: mask logits before sampling, advance after."""

    def __init__(self, grammar: xgr.CompiledGrammar, vocab_size: int):
        self.matcher = xgr.GrammarMatcher(grammar)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        self.matcher.fill_next_token_bitmask(self.bitmask, 0)
        xgr.apply_token_bitmask_inplace(logits, self.bitmask)
        return logits

    def accept(self, token: int) -> None:
        if not self.matcher.is_terminated():
            self.matcher.accept_token(token)
