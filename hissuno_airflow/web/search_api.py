"""``GET /api/search``: hybrid search over what the connections ingested, for the page's search box.

Query parameters: ``q`` (required), ``kind`` (repeatable: session, issue, knowledge, contact, company),
``connection_id``, ``project_id`` (default project when absent), ``since``/``until`` (ISO 8601),
``limit`` (1-100, default 10), ``mode`` (hybrid, vector, text). Each hit carries its kind, title,
source plugin and connection, a snippet with the matching words marked «so», a link or external id,
and its score. After the embedding model changed, each request re-embeds a bounded batch of records
first (lazily) and says how many are still waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, jsonify, request

from .. import settings
from ..kit.errors import InputError
from ..store.embedder import get_embedder
from ..store.projects import get_project
from ..store.reembed import missing, reembed
from ..store.search import search
from .access import require_user
from .blueprint import store
from .input_checks import check_request

search_bp = Blueprint("hissuno_search", __name__)
search_bp.before_request(require_user)
search_bp.before_request(check_request)
REEMBED_PER_REQUEST = 2000  # bounded: a request never waits for a whole model switch


def _when(name: str) -> datetime | None:
    raw = request.args.get(name) or None
    if raw is None:
        return None
    try:
        d = datetime.fromisoformat(raw)
    except ValueError:
        raise InputError(f"{name}: expected an ISO 8601 date or time; got {raw[:40]!r}", field=name) from None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _limit() -> int:
    raw = request.args.get("limit", "10")
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"limit: expected a whole number from 1 to 100; got {raw[:20]!r}", field="limit") from None


@search_bp.get("/api/search")
def search_route() -> Any:
    """Hybrid search results, best first."""
    query = request.args.get("q", "")
    if not query.strip():
        raise InputError("q: expected some text to search for", field="q")
    project = request.args.get("project_id") or settings.default_project_id()
    project_id = get_project(store(), project).id
    embedder = get_embedder()
    reembed(store(), project_id, embedder=embedder, budget=REEMBED_PER_REQUEST)
    hits = search(store(), query, project_id=project_id, kinds=request.args.getlist("kind") or None,
                  connection_id=request.args.get("connection_id") or None, since=_when("since"),
                  until=_when("until"), limit=_limit(), mode=request.args.get("mode", "hybrid"),
                  embedder=embedder)
    return jsonify({"query": query, "model": embedder.model, "results": [h.to_dict() for h in hits],
                    "reembedding_pending": missing(store(), project_id, embedder.model)})
