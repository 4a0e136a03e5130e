"""Webhook intake, the request path: verify, answer handshakes, resolve, store once per stream, wake."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from ... import registry
from ...kit.context import Response
from ...kit.define import PluginDef
from ...kit.errors import InputError, NotFoundError
from ...kit.input_limits import check_id, loads_json
from ...kit.redaction import redact
from ...kit.signatures import SignatureFailure, SignedRequest, WebhookEvent, resolve_secret, verify
from ...store import connections as repo
from ...store.db import Store, get_store
from ..handlers import call_handler
from .dispatch import Dispatcher, default_dispatcher

DEFAULT_MAX_BODY = 1024 * 1024
_DROP_HEADERS = frozenset({"cookie", "authorization", "proxy-authorization"})


class PayloadTooLarge(InputError):
    """The body exceeds the webhook size limit."""

    code = "payload_too_large"
    http_status = 413


def max_body_bytes() -> int:
    """``HISSUNO_WEBHOOK_MAX_BYTES`` (default 1 MiB)."""
    try:
        return int(os.environ.get("HISSUNO_WEBHOOK_MAX_BYTES", DEFAULT_MAX_BODY))
    except ValueError:
        return DEFAULT_MAX_BODY


@dataclass(frozen=True)
class IntakeRequest:
    """A webhook request, framework-neutral."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class IntakeResult:
    """What the route answers, and which stream inboxes received new events."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    queued: list[tuple[str, str]] = field(default_factory=list)


class _ResolveServices:
    """What ``resolve_connection`` may use after the signature was verified: lookups, and the account
    state the provider itself reports (an app uninstalled or suspended)."""

    def __init__(self, store: Store, plugin_id: str) -> None:
        self._store = store
        self._plugin_id = plugin_id

    def find_connections(self, external_account_id: str) -> list[str]:
        """Ids of every connection (any project) of this provider account."""
        rows = repo.find_connections_by_account(self._store, self._plugin_id, str(external_account_id))
        return [r.id for r in rows]

    def _own(self, connection_id: str) -> repo.ConnectionRow:
        return repo.get_connection(self._store, connection_id, plugin_id=self._plugin_id)

    def mark_reconnect_needed(self, connection_id: str, reason: str) -> None:
        """The provider says the connection's grant is gone: mark it "reconnect needed" with ``reason``, and
        forget the access token it holds, so the next run asks the provider again (and fails with its
        answer) instead of calling data endpoints with a token the provider has revoked."""
        from ..credentials import load_credentials, save_credentials

        connection = self._own(connection_id)
        advice = (f"{reason}; reconnect needed: run `hissuno connect {self._plugin_id} --update {connection_id}` "
                  "or reconnect it on the Integrations page")
        repo.set_auth_error(self._store, connection_id, advice[:2000])
        creds = load_credentials(self._store, connection)
        if creds.get("access_token") and (creds.get("refresh_token") or creds.get("installation_id")):
            save_credentials(self._store, connection,
                             {k: v for k, v in creds.items() if k not in ("access_token", "expires_at")})

    def clear_reconnect_needed(self, connection_id: str) -> None:
        """The provider says the grant works again (an app unsuspended): clear the mark."""
        repo.set_auth_error(self._store, self._own(connection_id).id, None)


@dataclass
class ResolveCtx:
    """Context of ``resolve_connection(event, ctx)``."""

    plugin_id: str
    services: _ResolveServices

    def find_connections(self, external_account_id: str) -> list[str]:
        """Ids of the connections of ``external_account_id`` (several projects may share an account)."""
        return self.services.find_connections(external_account_id)

    def mark_reconnect_needed(self, connection_id: str, reason: str) -> None:
        """Mark a connection of this plugin "reconnect needed" (see ``_ResolveServices``)."""
        self.services.mark_reconnect_needed(connection_id, reason)

    def clear_reconnect_needed(self, connection_id: str) -> None:
        """Clear the mark of a connection of this plugin."""
        self.services.clear_reconnect_needed(connection_id)


def _payload(body: bytes) -> Any:
    # Depth is counted before parsing, and what jsonb cannot store (NUL, lone surrogates) is refused:
    # the event is stored as jsonb, and a refusal is a 400 the provider sees, never a 500.
    return loads_json(body, "body")


def _event_type(payload: Any) -> str | None:
    if not isinstance(payload, Mapping):
        return None
    for key in ("type", "event_type", "action", "topic"):
        v = payload.get(key)
        if isinstance(v, str):
            inner = payload.get("event")
            if key == "type" and v == "event_callback" and isinstance(inner, Mapping):
                return str(inner.get("type") or v)[:100]
            return v[:100]
    return None


def _safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    kept = {k.lower(): v for k, v in headers.items() if k.lower() not in _DROP_HEADERS}
    return redact(kept)  # type: ignore[no-any-return]


def receive_webhook(
    plugin_id: str, req: IntakeRequest, *, connection_id: str | None = None, store: Store | None = None,
    dispatcher: Dispatcher | None = None, now: float | None = None,
) -> IntakeResult:
    """Verify, dedupe and enqueue one webhook; raise a HissunoError for every refusal.

    Raises:
        UnknownPluginError: (404) no such plugin.
        NotFoundError: (404) the plugin takes no webhooks, or no connection matches the sender.
        PayloadTooLarge: (413) the body exceeds the limit.
        WebhookSignatureError: (401) missing, stale or forged signature, or no secret configured.
        InputError: (400) the verified body is not JSON.
    """
    plugin = registry.get_plugin(plugin_id)
    if connection_id is not None:
        check_id(connection_id, "connection_id")
    if len(req.body) > max_body_bytes():
        raise PayloadTooLarge(f"body: larger than {max_body_bytes()} bytes", field="body")
    scheme = plugin.webhook_signature
    if scheme is None:
        raise NotFoundError(f"plugin {plugin.id!r} does not accept webhooks", field="plugin_id")
    signed = SignedRequest(body=req.body, headers=req.headers, method=req.method, url=req.url)
    store_ = store

    def the_store() -> Store:
        nonlocal store_
        store_ = store_ or get_store()
        return store_

    if connection_id is None:
        if plugin.resolve_connection is None:
            msg = f"plugin {plugin.id!r} needs the connection id in the webhook URL"
            raise NotFoundError(msg, field="connection_id")
        verified = verify(scheme, resolve_secret(scheme), signed, now=now)
        conn_settings: Mapping[str, Any] | None = None
    else:
        # The only read before verification: the connection's own row, for its secret.
        connection = repo.get_connection(the_store(), connection_id, plugin_id=plugin.id)
        conn_settings = connection.settings
        handed = scheme.handshake_secret(req.body)
        if handed is not None:
            return _capture_handshake(the_store(), connection, scheme, handed)
        verified = verify(scheme, resolve_secret(scheme, settings=conn_settings), signed, now=now)

    payload = _payload(req.body)
    challenge = scheme.challenge(payload)
    if challenge is not None:
        return IntakeResult(200, challenge)
    event_id = scheme.event_id(signed, payload, verified) or "sha256:" + hashlib.sha256(req.body).hexdigest()

    if connection_id is None:
        event = WebhookEvent(payload=payload, raw_body=req.body, headers=dict(req.headers), event_id=event_id)
        resolver = plugin.resolve_connection
        assert resolver is not None  # checked above, before verification
        answer = call_handler(resolver, event, ResolveCtx(plugin.id, _ResolveServices(the_store(), plugin.id)))
        if isinstance(answer, Response):
            return IntakeResult(answer.status, answer.body, dict(answer.headers))
        ids = [answer] if isinstance(answer, str) else list(answer or [])
        if not ids:
            raise NotFoundError("no connection matches this webhook", field="connection_id")
        for cid in ids:
            try:
                repo.get_connection(the_store(), cid, plugin_id=plugin.id)
            except NotFoundError:
                raise NotFoundError("connection resolution mismatch", field="connection_id") from None
    else:
        ids = [connection_id]

    queued, duplicates = _enqueue(the_store(), plugin, ids, event_id, payload, req)
    if queued:
        (dispatcher or default_dispatcher()).dispatch(queued)
    return IntakeResult(200, {"success": True, "event_id": event_id, "queued": len(queued),
                              "duplicate": duplicates > 0 and not queued})


def _capture_handshake(store: Store, connection: repo.ConnectionRow, scheme: Any, secret: str) -> IntakeResult:
    """Keep the secret an unsigned setup handshake hands over (Notion's verification token) as the
    connection's secret, once: while the connection has none, or when the same one arrives again.

    A different one while a secret is set is refused like a bad signature (anyone may post to the URL;
    only the first handshake after the secret is cleared is trusted, and the user confirms it at the
    provider by pasting the same token back).
    """
    current = resolve_secret(scheme, settings=connection.settings)
    if current is None and scheme.secret_setting:
        repo.update_connection(store, connection.id, settings={scheme.secret_setting: secret})
    elif current != secret:
        raise SignatureFailure("bad_signature", "a verification token is already kept for this connection; "
                               f"clear its {scheme.secret_setting} setting to accept a new one")
    return IntakeResult(200, {"success": True, "verification_token_received": True})


_ENQUEUE = """
WITH target AS (
    SELECT connection_id, stream_id FROM integration_streams
    WHERE connection_id = ANY(%(connections)s) AND enabled AND split_part(stream_id, ':', 1) = ANY(%(keys)s)
), stored AS (
    INSERT INTO webhook_events (plugin_id, connection_id, stream_id, event_id, event_type, payload, raw_body, headers)
    SELECT %(plugin)s, connection_id, stream_id, %(event_id)s, %(event_type)s, %(payload)s, %(raw_body)s, %(headers)s
    FROM target
    ON CONFLICT (connection_id, stream_id, event_id) DO NOTHING
    RETURNING connection_id, stream_id
)
SELECT target.connection_id, target.stream_id, stored.stream_id IS NOT NULL AS queued
FROM target LEFT JOIN stored USING (connection_id, stream_id)
ORDER BY target.connection_id, target.stream_id
"""


def _enqueue(
    store: Store, plugin: PluginDef, connection_ids: list[str], event_id: str, payload: Any, req: IntakeRequest
) -> tuple[list[tuple[str, str]], int]:
    """Store the event once per enabled webhook stream of the connections: one statement, one round trip."""
    keys = [key for key, st in plugin.streams.items() if st.webhook is not None]
    if not keys:
        return [], 0
    with store.autocommit() as conn:
        rows = conn.execute(_ENQUEUE, {
            "connections": connection_ids, "keys": keys, "plugin": plugin.id, "event_id": event_id,
            "event_type": _event_type(payload), "payload": Jsonb(payload), "raw_body": req.body,
            "headers": Jsonb(_safe_headers(req.headers)),
        }).fetchall()
    queued = [(r["connection_id"], r["stream_id"]) for r in rows if r["queued"]]
    return queued, len(rows) - len(queued)
