"""Structured output: ``response_format`` compiled to a token-level grammar with xgrammar.

``json_object`` is the schema ``{"type": "object"}``; ``json_schema`` compiles the given schema
(strict, properties in the schema's order, no free whitespace runs, so a small model cannot
stall in padding). At each step the
matcher's bitmask removes every token that would break the grammar, so the output always
parses — unless ``max_tokens`` cuts it short, which finishes with ``length``, as OpenAI does.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache

import torch
import xgrammar as xgr

from omniloom.errors import InvalidRequest


class GrammarCompiler:
    def __init__(self, vocab: list[str], stop_ids: list[int], vocab_size: int):
        self.info = xgr.TokenizerInfo(
            vocab,
            vocab_type=xgr.VocabType.BYTE_LEVEL,
            vocab_size=vocab_size,
            stop_token_ids=stop_ids,
        )
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=1)
        self._lock = threading.Lock()
        self.compile_schema = lru_cache(maxsize=64)(self._compile_schema)

    def _compile_schema(self, schema_json: str) -> xgr.CompiledGrammar:
        with self._lock:
            return self._compiler.compile_json_schema(schema_json, any_whitespace=False)

    def compile(self, response_format: dict | None) -> xgr.CompiledGrammar | None:
        kind = (response_format or {}).get("type", "text")
        if kind == "text":
            return None
        if kind == "json_object":  # as OpenAI: a JSON object, not any JSON value
            return self.compile_schema('{"type": "object"}')
        if kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            if "schema" not in spec:
                raise InvalidRequest(
                    "response_format json_schema needs a 'json_schema.schema' object.",
                    param="response_format",
                )
            try:
                return self.compile_schema(json.dumps(spec["schema"]))
            except RuntimeError as exc:
                raise InvalidRequest(
                    f"The JSON schema could not be compiled: {exc}", param="response_format"
                ) from exc
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
