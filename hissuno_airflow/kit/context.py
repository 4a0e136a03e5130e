"""Contexts handed to plugin handlers: the plugin's only view of the platform.

The runtime fills the ``Protocol`` seams (``Ingest``, ``SyncServices``); a plugin can be unit-tested
by passing its own implementations.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from .errors import SyncCancelled
from .knowledge import KnowledgeHit, search_knowledge
from .records import CompanyRecord, ContactRecord, IssueRecord, KnowledgeRecord, SessionRecord
from .types import SyncMode, TriggerSource

if TYPE_CHECKING:
    from .http.client import ProviderClient


class ProgressEvent(BaseModel):
    """One progress event; ``found``/``synced``/``skipped``/``failed``/``deleted`` are counted by the runner."""

    model_config = ConfigDict(frozen=True)

    type: str
    message: str | None = None
    current: int | None = None
    total: int | None = None
    external_id: str | None = None
    hissuno_id: str | None = None


IngestAction = Literal["created", "updated", "unchanged", "deleted", "missing", "failed"]

DeleteKind = Literal["sessions", "contacts", "companies", "issues", "knowledge",
                     "session", "contact", "company", "issue"]
"""Kinds ``Ingest.delete`` accepts: the entity kinds, or the name of the primitive that ingested it."""


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one ingest call."""

    id: str | None
    """Hissuno id of the entity (None when the record failed)."""
    kind: str
    """Entity kind: sessions, contacts, companies, issues, knowledge."""
    action: IngestAction
    """What happened: created, updated, unchanged (nothing written), deleted, missing (a delete of an
    external id this stream never ingested) or failed."""
    error: str | None = None
    """Why it failed, when it did (also stored in ingest_errors)."""


class Ingest(Protocol):
    """Idempotent ingest primitives bound to one (connection, stream)."""

    def session(self, record: SessionRecord | None = None, /, **fields: Any) -> IngestResult: ...
    def contact(self, record: ContactRecord | None = None, /, **fields: Any) -> IngestResult: ...
    def company(self, record: CompanyRecord | None = None, /, **fields: Any) -> IngestResult: ...
    def issue(self, record: IssueRecord | None = None, /, **fields: Any) -> IngestResult: ...
    def knowledge(self, record: KnowledgeRecord | None = None, /, **fields: Any) -> IngestResult: ...

    def delete(self, kind: DeleteKind, external_id: str | int, /) -> IngestResult:
        """Mark the entity this stream ingested from ``external_id`` as deleted at its source.

        ``kind`` is ``sessions``, ``contacts``, ``companies``, ``issues`` or ``knowledge``; the
        primitive's name (``session``, ``contact``, ``company``, ``issue``) is accepted too. The entity
        is not removed: it gets a ``deleted_at`` time, leaves search results, and keeps its history and
        graph edges. Idempotent: ``action`` is ``deleted`` when this call deleted it, ``unchanged``
        when it was already deleted, ``missing`` when this stream never ingested ``external_id``.
        Ingesting the same external id again later (a provider restore) clears the mark. A contact or
        company that another source still has stays visible (only this source's link is deleted).
        Emits a ``deleted`` progress event (``skipped`` when nothing changed).
        """
        ...


class Logger(Protocol):
    """Structured logger; every message is redacted before it is written."""

    def debug(self, message: str, data: Mapping[str, Any] | None = None) -> None: ...
    def info(self, message: str, data: Mapping[str, Any] | None = None) -> None: ...
    def warning(self, message: str, data: Mapping[str, Any] | None = None) -> None: ...
    def error(self, message: str, data: Mapping[str, Any] | None = None) -> None: ...


@dataclass(frozen=True)
class ContactRef:
    """A contact of the project, as a plugin that enriches existing contacts reads it."""

    id: str
    """Hissuno id of the contact."""
    email: str
    name: str


class SyncServices(Protocol):
    """What the runtime provides behind a SyncCtx."""

    @property
    def ingest(self) -> Ingest:
        """The ingest primitives (read-only, so any conforming implementation fits)."""
        ...

    def is_synced(self, external_id: str) -> bool: ...
    def get_synced_ids(self) -> set[str]: ...
    def progress(self, event: ProgressEvent) -> None: ...
    def save_credentials(self, credentials: Mapping[str, Any]) -> None: ...
    def advance_cursor(self, ts: datetime) -> None: ...
    def http_client(self, base: str = "API", **kwargs: Any) -> ProviderClient: ...
    def base_url(self, name: str) -> str: ...


class CancelSignal:
    """Cancellation flag shared by the runtime and a running handler (thread-safe)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    @property
    def cancelled(self) -> bool:
        """True once ``cancel`` was called."""
        return self._event.is_set()

    aborted = cancelled

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the handler to stop at its next check."""
        self.reason = reason
        self._event.set()

    def raise_if_cancelled(self) -> None:
        """Raise SyncCancelled when cancelled; call between pages or records."""
        if self._event.is_set():
            raise SyncCancelled(self.reason or "cancelled")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on cancel; returns True when cancelled."""
        return self._event.wait(seconds)


class _StdLogger:
    def __init__(self, name: str) -> None:
        self._log = logging.getLogger(name)

    def debug(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        self._log.debug(message)

    def info(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        self._log.info(message)

    def warning(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        self._log.warning(message)

    def error(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        self._log.error(message)


@dataclass
class SyncCtx:
    """Everything a ``sync`` handler may see or do."""

    plugin_id: str
    project_id: str
    connection_id: str
    stream_id: str
    stream_key: str
    instance_id: str | None
    credentials: Mapping[str, Any]
    settings: Any
    """Validated settings (an instance of the stream's settings model, else a dict)."""
    filters: Any
    """Validated filters (an instance of the stream's filters model, else a dict)."""
    last_sync_at: datetime | None
    """High-water mark of the last successful run; None on a first or full run."""
    until: datetime | None
    """Upper bound (exclusive) of provider update times to sync; None means now."""
    sync_mode: SyncMode
    triggered_by: TriggerSource
    services: SyncServices
    signal: CancelSignal = field(default_factory=CancelSignal)
    logger: Logger = field(default_factory=lambda: _StdLogger("hissuno.plugin"))

    @property
    def ingest(self) -> Ingest:
        """Idempotent ingest primitives bound to this connection and stream."""
        return self.services.ingest

    def is_synced(self, external_id: str) -> bool:
        """Whether this stream already ingested ``external_id``."""
        return self.services.is_synced(str(external_id))

    def get_synced_ids(self) -> set[str]:
        """All external ids this stream ingested so far."""
        return self.services.get_synced_ids()

    def progress(self, type: str, message: str | None = None, **fields: Any) -> None:
        """Emit a progress event (``found``, ``synced``, ``skipped``, ``failed``, ``deleted`` are counted;
        any other type is passed on)."""
        self.services.progress(ProgressEvent(type=type, message=message, **fields))

    def save_credentials(self, credentials: Mapping[str, Any]) -> None:
        """Persist new credentials (for example a rotated token) and use them from now on."""
        self.services.save_credentials(credentials)
        self.credentials = dict(credentials)

    def advance_cursor(self, ts: datetime) -> None:
        """Raise the high-water mark without ingesting (e.g. after scanning records that were filtered out)."""
        self.services.advance_cursor(ts)

    def http_client(self, base: str = "API", **kwargs: Any) -> ProviderClient:
        """An HTTP client for the named base URL with retries, rate-limit handling and redacted logs."""
        return self.services.http_client(base, **kwargs)

    def base_url(self, name: str) -> str:
        """Resolved base URL by name (honours ``HISSUNO_<PLUGIN>_<NAME>_URL``)."""
        return self.services.base_url(name)

    def project_contacts(self) -> list[ContactRef]:
        """The project's contacts (not archived, not deleted), whichever integration made them, read
        through the store; what a plugin that enriches existing contacts matches against. Empty when
        the services offer none (a plugin unit-tested with its own services)."""
        fn = getattr(self.services, "project_contacts", None)
        return list(fn()) if callable(fn) else []

    def since(self, *candidates: datetime | None) -> datetime | None:
        """The later of the cursor (incremental mode only) and any user date filters given."""
        vals = [c for c in candidates if c is not None]
        if self.sync_mode == "incremental" and self.last_sync_at is not None:
            vals.append(self.last_sync_at)
        return max(vals) if vals else None


@dataclass
class WebhookCtx:
    """Everything a stream's ``webhook`` handler may see or do for one verified event."""

    plugin_id: str
    project_id: str
    connection_id: str
    stream_id: str
    stream_key: str
    instance_id: str | None
    credentials: Mapping[str, Any]
    settings: Any
    payload: Any
    """Parsed JSON body (None when the body is not JSON)."""
    raw_body: bytes
    headers: Mapping[str, str]
    event_id: str | None
    services: SyncServices
    logger: Logger = field(default_factory=lambda: _StdLogger("hissuno.webhook"))
    filters: Any = None
    """The stream's validated filters, as a sync sees them (a handler that re-reads the provider, such
    as a code refresh on a push, applies the same choice); None when the stream declares none."""

    @property
    def ingest(self) -> Ingest:
        """Ingest primitives bound to this connection and stream."""
        return self.services.ingest

    def is_synced(self, external_id: str) -> bool:
        """Whether this stream already ingested ``external_id``."""
        return self.services.is_synced(str(external_id))

    def save_credentials(self, credentials: Mapping[str, Any]) -> None:
        """Persist new credentials."""
        self.services.save_credentials(credentials)

    def http_client(self, base: str = "API", **kwargs: Any) -> ProviderClient:
        """An HTTP client for the named base URL."""
        return self.services.http_client(base, **kwargs)

    def base_url(self, name: str) -> str:
        """Resolved base URL by name (honours ``HISSUNO_<PLUGIN>_<NAME>_URL``)."""
        return self.services.base_url(name)

    def search_knowledge(self, query: str, limit: int = 5) -> list[KnowledgeHit]:
        """The project's knowledge chunks nearest to ``query``, best first ([] when the runtime has none)."""
        return search_knowledge(self.services, query, limit)


@dataclass
class ListCtx:
    """Context of ``instances()``: list the instances a user can pick."""

    plugin_id: str
    project_id: str
    connection_id: str
    credentials: Mapping[str, Any]
    settings: Mapping[str, Any]
    services: Any
    logger: Logger = field(default_factory=lambda: _StdLogger("hissuno.plugin"))
    signal: CancelSignal = field(default_factory=CancelSignal)

    def http_client(self, base: str = "API", **kwargs: Any) -> ProviderClient:
        """An HTTP client for the named base URL."""
        return self.services.http_client(base, **kwargs)  # type: ignore[no-any-return]

    def base_url(self, name: str) -> str:
        """Resolved base URL by name (honours ``HISSUNO_<PLUGIN>_<NAME>_URL``)."""
        return self.services.base_url(name)  # type: ignore[no-any-return]


@dataclass
class AuthCtx:
    """Context of ``test``, ``on_token_exchanged``, ``on_installation``, ``refresh`` and custom connect."""

    plugin_id: str
    project_id: str
    services: Any
    logger: Logger = field(default_factory=lambda: _StdLogger("hissuno.auth"))
    connection_id: str | None = None
    """Reconnect target, when the user is reconnecting an existing account."""
    callback_query: Mapping[str, str] = field(default_factory=dict)
    """``on_installation``: the rest of the provider's redirect back (GitHub's ``setup_action``, and ``code``
    when the app asks for user authorization during installation), ``state`` left out."""

    def http_client(self, base: str = "API", **kwargs: Any) -> ProviderClient:
        """An HTTP client for the named base URL."""
        return self.services.http_client(base, **kwargs)  # type: ignore[no-any-return]

    def base_url(self, name: str) -> str:
        """Resolved base URL by name (honours ``HISSUNO_<PLUGIN>_<NAME>_URL``)."""
        return self.services.base_url(name)  # type: ignore[no-any-return]

    def save_connection(self, result: Any) -> str:
        """Persist a connection (upsert per project, plugin and account); returns its id."""
        return self.services.save_connection(result)  # type: ignore[no-any-return]

    def update_connection(self, connection_id: str, **changes: Any) -> None:
        """Update credentials, settings or label of an existing connection of this project."""
        self.services.update_connection(connection_id, **changes)

    def sign_state(self, data: Mapping[str, Any]) -> str:
        """A signed, expiring, single-use state token for a custom redirect leg."""
        return self.services.sign_state(data)  # type: ignore[no-any-return]

    def verify_state(self, token: str) -> dict[str, Any]:
        """Check and consume a state token made by ``sign_state``."""
        return self.services.verify_state(token)  # type: ignore[no-any-return]

    def app_jwt(self) -> str:
        """``github_app`` plugins: a JWT authenticating as the app (to look up an installation)."""
        return self.services.app_jwt()  # type: ignore[no-any-return]


@dataclass
class RouteCtx:
    """Context of a custom handler (plugin-level: no connection; connection-level: credentials loaded)."""

    plugin_id: str
    project_id: str
    connection_id: str | None
    credentials: Mapping[str, Any] | None
    settings: Mapping[str, Any]
    services: Any
    logger: Logger = field(default_factory=lambda: _StdLogger("hissuno.route"))

    def http_client(self, base: str = "API", **kwargs: Any) -> ProviderClient:
        """An HTTP client for the named base URL."""
        return self.services.http_client(base, **kwargs)  # type: ignore[no-any-return]

    def base_url(self, name: str) -> str:
        """Resolved base URL by name (honours ``HISSUNO_<PLUGIN>_<NAME>_URL``)."""
        return self.services.base_url(name)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Request:
    """A framework-neutral HTTP request handed to custom connect and custom handlers."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (None when empty); a body that is not JSON, nests too deep or holds what
        the store cannot (NUL, lone surrogates) is an ``InputError`` naming ``body``."""
        from .input_limits import loads_json

        return loads_json(self.body, "body") if self.body else None


@dataclass(frozen=True)
class Response:
    """What a custom handler or webhook handler may return instead of a dict."""

    body: Any = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    redirect: str | None = None
