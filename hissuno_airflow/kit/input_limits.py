"""What outside input may carry into the store, checked where it enters (web routes, runtime entry points).

PostgreSQL text and jsonb cannot hold a NUL character, UTF-8 cannot encode a lone surrogate (JSON's
``"\\ud800"``), jsonb refuses NaN and Infinity, a btree index row holds at most about 2.7 KB, and
``json.loads`` recurses once per nesting level. Each of these used to surface as a 500; here each is an
``InputError`` naming the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from .errors import InputError

MAX_ID_CHARS = 256
"""Identifiers (path segments, stream and instance ids, external account ids): 4 bytes a character at
most, so an indexed id stays far under PostgreSQL's btree row limit."""
MAX_LABEL_CHARS = 500
"""Human labels (account and project names)."""
MAX_QUERY_CHARS = 8192
"""One query-string value."""
MAX_JSON_DEPTH = 64
"""Nesting levels of a JSON document; provider payloads stay far below, recursion limits far above."""

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as PostgreSQL text (None when it can)."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a character that is not valid Unicode (a lone surrogate)"
    return None


def check_text(value: str, field: str, *, max_chars: int | None = None) -> str:
    """``value`` unchanged when it is storable and at most ``max_chars`` long; InputError naming ``field``."""
    problem = text_problem(value)
    if problem is None and max_chars is not None and len(value) > max_chars:
        problem = f"expected at most {max_chars} characters; got {len(value)}"
    if problem is not None:
        raise InputError(f"{field}: {problem}", field=field)
    return value


def check_id(value: str, field: str) -> str:
    """An identifier: storable text of at most ``MAX_ID_CHARS`` characters."""
    return check_text(value, field, max_chars=MAX_ID_CHARS)


def check_label(value: str, field: str) -> str:
    """A label: storable text of at most ``MAX_LABEL_CHARS`` characters."""
    return check_text(value, field, max_chars=MAX_LABEL_CHARS)


def json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of the JSON text ``raw`` without parsing it (stops counting past ``limit``)."""
    brackets = _NOT_BRACKET.sub(b"", _STRINGS.sub(b"", raw))
    depth = deepest = 0
    for ch in brackets:
        if ch in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def check_json_value(value: Any, field: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``value`` unchanged when jsonb can store it: no NUL or lone surrogate in a key or string, finite
    numbers, at most ``max_depth`` levels. Walks without recursion, so any depth is safe to check."""
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, (Mapping, list, tuple)):
            if depth >= max_depth:
                raise InputError(f"{field}: nested deeper than {max_depth} levels", field=field)
            pairs = item.items() if isinstance(item, Mapping) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    problem = text_problem(key)
                    if problem is not None:
                        raise InputError(f"{path}: a key {problem}", field=field)
                stack.append((child, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]", depth + 1))
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                raise InputError(f"{path}: {problem}", field=field)
        elif isinstance(item, float) and not math.isfinite(item):
            raise InputError(f"{path}: expected a finite number", field=field)
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_json(raw: bytes | str, field: str = "body", *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON document from outside: depth measured before parsing, storable after.

    Raises:
        InputError: (naming ``field``) not JSON, nested deeper than ``max_depth``, or holding what jsonb
            cannot store (NUL, lone surrogates, NaN, Infinity).
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if json_depth(data, max_depth) > max_depth:
        raise InputError(f"{field}: JSON nested deeper than {max_depth} levels", field=field)
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:  # the pre-count makes this unreachable; kept so a parser change stays a 400
        raise InputError(f"{field}: JSON nested deeper than {max_depth} levels", field=field) from None
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{field}: expected a JSON document", field=field) from None
    return check_json_value(value, field, max_depth=max_depth)
