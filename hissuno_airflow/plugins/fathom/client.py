"""Fathom's external API (``https://api.fathom.ai/external/v1``) as named methods.

Composition: the runtime's ``ProviderClient`` (retries, 429 and Retry-After, the connection's rate
budget, redacted logs) signs every request with ``X-Api-Key`` and this class only names endpoints.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from hissuno_airflow.kit import ProviderResponseError
from hissuno_airflow.kit.http import CursorPaginator, ProviderClient

BOUNDARY_OVERLAP = timedelta(seconds=1)
"""``created_after`` is sent this much before the cursor: whether Fathom's bound is inclusive is not
documented, and a meeting stamped in the cursor's own second must not be lost. The overlap comes back
unchanged and writes nothing."""

MAX_PAGES = 500
"""Safety stop for one listing (the reference stopped at 200)."""


def account_id(api_key: str) -> str:
    """The connection's account id: a hash of the key (Fathom has no who-am-I endpoint; see plugin.py)."""
    return "key-sha256:" + hashlib.sha256(api_key.strip().encode()).hexdigest()[:24]


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


class FathomClient:
    """The Fathom endpoints the plugin uses."""

    def __init__(self, http: ProviderClient) -> None:
        self.http = http

    def meetings(self, *, created_after: datetime | None = None, created_before: datetime | None = None,
                 with_content: bool = True) -> Iterator[dict[str, Any]]:
        """Meetings created after ``created_after`` (minus the overlap) and before ``created_before``.

        With ``with_content`` the transcript, default summary and action items are embedded, so most
        meetings need no further request.
        """
        params: dict[str, Any] = {}
        if created_after is not None:
            params["created_after"] = _iso(created_after - BOUNDARY_OVERLAP)
        if created_before is not None:
            params["created_before"] = _iso(created_before)
        if with_content:
            params.update(include_transcript="true", include_summary="true", include_action_items="true")
        return self.http.paginate("GET", "/meetings", CursorPaginator("next_cursor", "cursor"), params=params,
                                  data_path="items", max_pages=MAX_PAGES)

    def first_meeting(self) -> dict[str, Any] | None:
        """The first meeting of the first page (no content), or None for an account without meetings."""
        body = self.http.get_json("/meetings")
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            msg = "fathom GET /meetings: expected a list at 'items'"
            raise ProviderResponseError(msg, provider="fathom", status=200)
        return items[0] if items else None

    def transcript(self, recording_id: Any) -> list[dict[str, Any]] | None:
        """The recording's transcript items; None when Fathom has none (404)."""
        resp = self.http.get(f"/recordings/{recording_id}/transcript", allow_statuses={404})
        if resp.status_code == 404:
            return None
        body = self.http.parse_json(resp)
        items = body.get("transcript", body.get("entries")) if isinstance(body, dict) else body
        return items if isinstance(items, list) else None

    def summary(self, recording_id: Any) -> Any:
        """The recording's summary (``{template_name, markdown_formatted}``); None when there is none."""
        resp = self.http.get(f"/recordings/{recording_id}/summary", allow_statuses={404})
        if resp.status_code == 404:
            return None
        body = self.http.parse_json(resp)
        return body.get("summary") if isinstance(body, dict) else None
