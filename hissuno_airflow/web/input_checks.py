"""``before_request`` check of what every route receives in its path and query string.

Runs after authentication (an anonymous caller of a protected route learns nothing more than 401) and
before any route body, so a NUL character, a lone surrogate or an oversized identifier never reaches
PostgreSQL from a path segment or a query parameter. A body declared JSON is checked here too (depth
before parsing, then what jsonb cannot hold), so even a route that ignores its body refuses a hostile one
before acting; webhook bodies are checked after their signature (``runtime.webhooks.intake``), so an
unsigned request stays a 401 and the size limit is enforced while reading.
"""

from __future__ import annotations

from flask import request

from ..kit.input_limits import MAX_QUERY_CHARS, check_id, check_text, loads_json

# Path segments that are not identifiers: the tail a connection-level handler receives.
_FREE_SEGMENTS = frozenset({"rest"})
_SIGNED_BODIES = frozenset({"hissuno.webhook_static", "hissuno.webhook_connection"})


def _is_id(name: str) -> bool:
    return name.endswith(("_id", "Id", "_key")) or name in ("status", "mode")


def check_request() -> None:
    """Refuse (400, naming the field) path segments and query parameters the store cannot hold."""
    for name, value in (request.view_args or {}).items():
        if not isinstance(value, str):
            continue
        if name in _FREE_SEGMENTS:
            check_text(value, name, max_chars=MAX_QUERY_CHARS)
        else:
            check_id(value, name)
    for name, value in request.args.items(multi=True):
        check_text(name, "query", max_chars=MAX_QUERY_CHARS)
        if _is_id(name):
            check_id(value, name)
        else:
            check_text(value, name, max_chars=MAX_QUERY_CHARS)
    if request.endpoint not in _SIGNED_BODIES and request.is_json:
        raw = request.get_data(cache=True)
        if raw.strip():
            loads_json(raw, "body")
