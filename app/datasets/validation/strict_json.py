"""Hardened JSON parsing for dataset rows: what `json.loads` lets through, refused.

NaN/Infinity (also as 1e999), duplicate keys, nesting deeper than MAX_DEPTH and lone surrogates
(the tokenizer would fail on them) are refused with a ValueError naming the problem. Walks are
iterative: no recursion on hostile input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

MAX_DEPTH = 32  # JSON nesting; a chat row needs 3
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json_text(text: str) -> Any:
    """Strict JSON: NaN/Infinity, duplicate keys and nesting deeper than MAX_DEPTH are refused."""
    try:
        value = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_pairs_without_duplicates
        )
    except RecursionError:
        raise ValueError(f"nesting deeper than {MAX_DEPTH} levels") from None
    if _too_deep(value):
        raise ValueError(f"nesting deeper than {MAX_DEPTH} levels")
    if _has_non_finite(value):  # e.g. 1e999 parses to inf
        raise ValueError("a number is out of range (Infinity is not allowed)")
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff): not valid Unicode")
    return value


def parse_json_line(raw: bytes) -> Any:
    """Parse one JSONL line (UnicodeDecodeError for bad UTF-8, ValueError for bad JSON)."""
    return parse_json_text(raw.decode("utf-8"))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:80]!r}")
            seen.add(key)
    return obj


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether containers nest deeper than `limit`."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _leaves(value: Any) -> Iterator[Any]:
    """Every scalar of a parsed JSON value, object keys included."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def _has_non_finite(value: Any) -> bool:
    return any(isinstance(leaf, float) and not math.isfinite(leaf) for leaf in _leaves(value))


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string (key or value) holds a surrogate that is not part of a pair."""
    return any(isinstance(leaf, str) and not _encodable(leaf) for leaf in _leaves(value))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
