"""Bounds and plain errors for a JSON schema before xgrammar compiles it.

xgrammar's compile time grows fast with a schema's size (2,000 optional properties took 48 s
on a 2-core EPYC, 1,000 took 2.6 s) and its errors are C++ log lines that name no part of the
schema. So a schema is bounded in bytes, in values (every object, array and scalar in it, at
every level) and in the repetition counts it asks for; and the mistakes that can be pinned to a
place — an unknown ``type``, a ``$ref`` to nowhere, a pattern that is not a regular expression, a
minimum above its maximum — are refused with the JSON path of that place.
"""

from __future__ import annotations

import json
import re
from typing import Any

from omniloom.config import Limits
from omniloom.errors import InvalidRequest, json_path

TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
MAX_REPEAT = 10_000  # minLength, maxItems, ...: more than any completion here can hold
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_RANGES = (
    ("minimum", "maximum"),
    ("minLength", "maxLength"),
    ("minItems", "maxItems"),
    ("minProperties", "maxProperties"),
)
ROOT = ("response_format", "json_schema", "schema")
DATA_KEYWORDS = {"const", "enum", "default", "examples"}


def refuse(message: str, path: tuple = ROOT) -> InvalidRequest:
    return InvalidRequest(f"{json_path(path)}: {message}", param="response_format")


def check_schema(schema: Any, limits: Limits) -> str:
    """The schema serialised for the compiler, once it is within the limits and free of the
    errors that can be pinned to a place; else a 400 that names the place."""
    if not isinstance(schema, dict | bool):
        raise refuse("a JSON schema must be an object.")
    text = json.dumps(schema)
    if len(text) > limits.max_schema_bytes:
        raise refuse(
            f"the schema is {len(text)} bytes; this server compiles schemas of at most "
            f"{limits.max_schema_bytes} bytes."
        )
    for node, path in _values(schema, limits.max_schema_nodes):
        _check_node(node, path, schema)
    return text


def _values(schema: Any, limit: int) -> list[tuple[dict, tuple]]:
    """Every subschema with its path, counting all values against ``limit``. Values under
    ``const``, ``enum``, ``default`` and ``examples`` are data, not schemas: counted, not
    checked as schemas."""
    subschemas, stack, count = [], [(schema, ROOT, True)], 0
    while stack:
        value, path, is_schema = stack.pop()
        count += 1
        if count > limit:
            raise refuse(
                f"the schema has more than {limit} values (objects, arrays and scalars at all "
                "levels); split it or make it smaller."
            )
        if isinstance(value, dict):
            if is_schema:
                subschemas.append((value, path))
            stack.extend(
                (v, (*path, k), is_schema and k not in DATA_KEYWORDS) for k, v in value.items()
            )
        elif isinstance(value, list):
            stack.extend((v, (*path, i), is_schema) for i, v in enumerate(value))
    return subschemas


def _check_node(node: dict, path: tuple, root: dict) -> None:
    _check_type(node.get("type"), path)
    _check_ref(node.get("$ref"), path, root)
    _check_pattern(node.get("pattern"), path)
    for key in _COUNTS:
        value = node.get(key)
        if isinstance(value, int) and not 0 <= value <= MAX_REPEAT:
            raise refuse(f"{key} must be between 0 and {MAX_REPEAT}.", (*path, key))
    for low, high in _RANGES:
        a, b = node.get(low), node.get(high)
        if isinstance(a, int | float) and isinstance(b, int | float) and a > b:
            raise refuse(f"{low} ({a}) is greater than {high} ({b}).", path)


def _check_type(kind: Any, path: tuple) -> None:
    if kind is None or not isinstance(kind, str | list):
        return
    for name in [kind] if isinstance(kind, str) else kind:
        if name not in TYPES:
            raise refuse(
                f"unknown type {json.dumps(name)}; JSON schema types are {', '.join(sorted(TYPES))}.",
                (*path, "type"),
            )


def _check_ref(ref: Any, path: tuple, root: dict) -> None:
    if not isinstance(ref, str) or ref == "#":
        return
    if not ref.startswith("#/"):
        raise refuse(f"only local references ('#/...') are supported, not {ref!r}.", path)
    target: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            raise refuse(f"the reference {ref!r} points to nothing in the schema.", path)
        target = target[part]


def _check_pattern(pattern: Any, path: tuple) -> None:
    if not isinstance(pattern, str):
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        raise refuse(f"the pattern is not a valid regular expression: {exc}.", path) from None
