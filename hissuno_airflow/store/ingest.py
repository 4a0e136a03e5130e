"""Idempotent, buffered ingestion bound to one (connection, stream).

Every primitive is keyed by (connection, stream, kind, external id) through
``integration_synced_records``, which also keeps a content hash: an unchanged record writes
nothing; a changed one updates the entity it made before (a session's messages are replaced);
a new one inserts. Sessions, issues, knowledge and contacts are buffered and written in bulk (COPY,
``executemany`` and set-based upserts) at ``flush``; companies upsert at once (few, and contacts join them
by domain). A contact's id is known before its row is written: the one this stream synced before, else
one derived from (project, lower-cased email), so every writer of a new person picks the same id; a row an
older version made under a random id is found by the flush's upsert and the batch re-pointed at it.

A record that fails validation or writing goes to ``ingest_errors`` and the run continues: kept as
JSON (dates as ISO text) with secrets masked, by key name and by the run's known secret values, one open
row per record; ingesting that record later (a replay, or any sync) marks the row resolved in the same
transaction. A store blip (restart, lost connection, deadlock) is not the record's fault: the write is
retried in place and, when the store stays away, the run fails retriably (``store/transient.py``).

Exactly once under concurrency: a new session, issue or knowledge source is written only after its
``integration_synced_records`` key (connection, stream, kind, external id) was inserted in the same
transaction; when another writer holds the key already, the buffered entity becomes an update of that
writer's entity, so no second entity is ever made for one external id. A record seen twice before a
flush is buffered once (the later version wins). ``fence`` (the run's lease check) runs in every flush
transaction, so a run that lost its lease writes nothing more.
Embedding and graph work is queued to ``Enricher`` (``store/enrich.py``), recorded in ``enrich_pending``
in the transaction of the entity writes, and runs after the writes.

``delete`` is a soft delete: the synced record and (once no live source points at it) the entity get a
``deleted_at`` time, buffered like the writes and applied after them at ``flush``. The entity keeps
its messages, chunks, embeddings and graph edges; ``search`` leaves it out. Ingesting the external id
again restores it (the write clears ``deleted_at``), even when its content did not change.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from psycopg.errors import UniqueViolation
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_json, to_jsonable_python

from ..kit.context import IngestResult, ProgressEvent
from ..kit.errors import InputError
from ..kit.records import (
    CompanyRecord,
    ContactRecord,
    IssueRecord,
    KnowledgeRecord,
    SessionRecord,
    bare_domain,
    hashed_json,
    validated_with_json,
)
from ..kit.redaction import redact, redact_text
from .bulk import copy_rows
from .chunking import chunk_markdown
from .classify import classifier
from .db import Db, Store, use
from .embedder import get_embedder
from .enrich import Enricher
from .synced_map import SyncedMap
from .transient import is_transient, retry_transient

log = logging.getLogger(__name__)

GENERIC_MAIL_DOMAINS = frozenset(
    ["gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "hotmail.com", "outlook.com", "live.com", "msn.com", "icloud.com", "me.com", "mac.com", "aol.com", "proton.me", "protonmail.com", "gmx.com", "gmx.de", "mail.com", "yandex.ru", "qq.com", "163.com", "zoho.com", "fastmail.com", "hey.com"]
)

_SESSION_COLS = (
    "id", "project_id", "contact_id", "name", "description", "status", "source", "session_type", "tags",
    "message_count", "user_metadata", "custom_fields", "first_message_at", "last_activity_at",
    "created_at", "updated_at",
)
_SESSION_TYPES = ("uuid", "uuid", "uuid", "text", "text", "text", "text", "text", "text[]", "int4", "jsonb", "jsonb",
                  "timestamptz", "timestamptz", "timestamptz", "timestamptz")
_MESSAGE_COLS = ("session_id", "project_id", "position", "sender_type", "sender_name", "content", "created_at")
_MESSAGE_TYPES = ("uuid", "uuid", "int4", "text", "text", "text", "timestamptz")
_ISSUE_COLS = ("id", "project_id", "name", "description", "type", "status", "priority", "custom_fields",
               "created_at", "updated_at")
_KNOWLEDGE_COLS = ("id", "project_id", "parent_id", "name", "description", "type", "status", "url", "content",
                   "origin", "custom_fields", "enabled", "analyzed_at", "created_at", "updated_at")
# Kinds ``delete`` accepts (entity kinds and primitive names) -> entity kind, and each kind's table.
DELETE_KINDS = {"sessions": "sessions", "session": "sessions", "contacts": "contacts", "contact": "contacts",
                "companies": "companies", "company": "companies", "issues": "issues", "issue": "issues",
                "knowledge": "knowledge"}
ENTITY_TABLES = {"sessions": "sessions", "contacts": "contacts", "companies": "companies", "issues": "issues",
                 "knowledge": "knowledge_sources"}
ENRICH_PASS = 10_000
"""Queued entities that make an enrichment pass during a sync (the rest at ``close``). A pass holds its items'
ids, hashes and lookups: at 20,000 a sync's peak memory grew until its fourth pass (1.42x from 10,000 to
100,000 Zendesk tickets; 1.37x at 10,000). At 5,000 a first sync lost a fifth of its speed: each pass after
the first inserts vectors one by one into indexes a single bulk load would have built (``enrich.BULK_MIN``)."""
_SYNCED_COLS = ("connection_id", "stream_id", "external_id", "hissuno_id", "hissuno_kind", "content_hash",
                "source_updated_at")
_SYNCED_TYPES = ("text", "text", "text", "uuid", "text", "text", "timestamptz")
_CHUNK_COLS = ("source_id", "project_id", "chunk_index", "chunk_text", "start_line", "end_line",
               "section_heading", "parent_headings")


def content_hash(record: BaseModel) -> str:
    """Hash of everything but ``updated_at``: a record whose content did not change writes nothing."""
    return _hash_json(hashed_json(record))


def _hash_json(dumped: str) -> str:
    return hashlib.sha256(dumped.encode()).hexdigest()[:32]


def _json_text(value: Any) -> bytes:
    return to_json(value, inf_nan_mode="null")


def _jsonb(value: Any) -> Jsonb:
    """A record's free map (metadata, custom fields) as jsonb, written by pydantic's encoder: as the content
    hash sees it, so what validated and hashed is also stored (times, decimals, ids and sets as JSON text; the
    stdlib encoder refused them and NaN, failing the whole batch), and in Rust rather than Python."""
    return Jsonb(value, _json_text)


def delete_kind(kind: str) -> str:
    """The entity kind ``Ingest.delete`` means by ``kind``; InputError naming the accepted ones otherwise."""
    entity_kind = DELETE_KINDS.get(kind)
    if entity_kind is None:
        msg = f"delete kind: expected one of {', '.join(DELETE_KINDS)}; got {kind!r}"
        raise InputError(msg, field="kind")
    return entity_kind


def email_domain(email: str) -> str | None:
    """The company domain of an email address, or None for generic mail providers."""
    domain = email.rsplit("@", 1)[-1].lower().strip()
    return None if domain in GENERIC_MAIL_DOMAINS or "." not in domain else domain


class StreamIngest:
    """The ``ctx.ingest`` of one run: idempotent primitives with bulk writes."""

    def __init__(
        self, store: Db, *, project_id: str, connection_id: str, stream_id: str,
        run_id: str | None = None, on_event: Callable[[ProgressEvent], None] | None = None,
        on_timestamp: Callable[[datetime], None] | None = None,
        window: tuple[datetime | None, datetime | None] = (None, None),
        enricher: Enricher | None = None, batch_size: int = 500, primary_kind: str | None = None,
        secrets: Sequence[str] = (),
        fence: Callable[[Any], None] | None = None,
    ) -> None:
        self.store = store
        self.project_id = project_id
        self._project_uuid = uuid.UUID(project_id)
        self.connection_id = connection_id
        self.stream_id = stream_id
        self.run_id = run_id
        self._on_event = on_event or (lambda e: None)
        # The stream's own kind: only its records count as synced/skipped, so a sessions stream that
        # also upserts each session's contact and company reports "40 found, 40 synced", not 92.
        # Failures of any kind are counted.
        self.primary_kind = primary_kind
        self._on_timestamp = on_timestamp or (lambda t: None)
        self.window = window
        if enricher is None:
            if not isinstance(store, Store):
                raise TypeError("StreamIngest over a caller's connection needs an enricher over the store")
            enricher = Enricher(store, project_id)
        self.enricher = enricher
        self.batch_size = batch_size
        # The run's known secret values (a live list: a refresh adds tokens), masked in kept records.
        self.secrets = secrets
        self._open_errors: set[tuple[str, str]] = set()  # records of this stream with an open ingest error
        self.fence = fence
        """Called with the connection inside every flush transaction, before its writes (the run's lease)."""
        self._synced: SyncedMap | None = None
        self._session_contacts: dict[tuple[str, str | None], str] = {}  # (email, name) -> contact id
        self._contact_ids: dict[str, str] = {}  # lower-cased email -> contact id, as far as this run knows
        self._company_ids: dict[str, str] = {}  # lower-cased domain -> company id
        self._deleted: set[tuple[str, str]] = set()  # synced records whose source deleted them
        # Synced records without a vector of the current model (another model's, or none yet): kept as
        # the exceptions, so a first sync of 100,000 records does not hold a second map of them all.
        self._stale_vectors: set[tuple[str, str]] = set()
        self._model = (self.enricher.embedder or get_embedder()).model
        self._classify = classifier()  # as configured when the run starts
        self._reset_buffers()

    # -- dedup map -------------------------------------------------------------------------

    def _map(self) -> SyncedMap:
        if self._synced is None:
            synced, stale, deleted = SyncedMap(), set(), set()
            with use(self.store) as conn, conn.cursor(row_factory=tuple_row) as cur:
                cur.execute(
                    "SELECT r.hissuno_kind, r.external_id, r.hissuno_id::text AS hid, r.content_hash,"
                    " e.model IS NULL AS stale, r.deleted_at IS NOT NULL AS deleted"
                    " FROM integration_synced_records r LEFT JOIN embeddings e ON e.entity_id = r.hissuno_id"
                    " AND e.entity_type = CASE r.hissuno_kind WHEN 'sessions' THEN 'session'"
                    " WHEN 'issues' THEN 'issue' WHEN 'knowledge' THEN 'knowledge_source'"
                    " WHEN 'contacts' THEN 'contact' ELSE 'company' END AND e.model = %s"
                    " WHERE r.connection_id = %s AND r.stream_id = %s",
                    (self._model, self.connection_id, self.stream_id),
                )
                # Row by row into the packed map: a list of every row as Python objects would be the run's
                # largest allocation on a stream of 100,000 records.
                for kind, ext, hid, h, is_stale, is_deleted in cur:
                    synced[(kind, ext)] = (hid, h)
                    if is_stale:
                        stale.add((kind, ext))
                    if is_deleted:
                        deleted.add((kind, ext))
            self._synced, self._stale_vectors, self._deleted = synced, stale, deleted
            with use(self.store) as conn:
                self._open_errors |= {(r["kind"], r["external_id"]) for r in conn.execute(
                    "SELECT kind, external_id FROM ingest_errors WHERE connection_id = %s AND stream_id = %s"
                    " AND status = 'open' AND external_id IS NOT NULL", (self.connection_id, self.stream_id))}
        return self._synced

    def is_synced(self, external_id: str) -> bool:
        """Whether a live (not deleted) entity of this stream came from ``external_id``."""
        return any(key[1] == external_id and key not in self._deleted for key in self._map())

    def get_synced_ids(self) -> set[str]:
        """Every external id this stream ingested and that was not deleted since."""
        return {key[1] for key in self._map() if key not in self._deleted}

    # -- buffers ---------------------------------------------------------------------------

    def _reset_buffers(self) -> None:
        # Keyed by entity id (rows are lists: a claim may re-point them), so a record seen twice before
        # a flush is written once, in its later version; ``True`` marks an entity this batch creates.
        self._sessions: dict[str, tuple[list[Any], bool]] = {}
        # Rows as COPY writes them (the session's id as a UUID): built once, here, for 10 to 100 a session.
        self._messages: dict[str, list[tuple[Any, ...]]] = {}
        self._issues: dict[str, tuple[list[Any], bool]] = {}
        self._issue_links: list[list[Any]] = []
        self._knowledge: dict[str, tuple[list[Any], bool]] = {}
        self._chunks: dict[str, list[list[Any]]] = {}
        self._synced_rows: dict[tuple[str, str], list[Any]] = {}
        self._deletes: dict[tuple[str, str], str] = {}  # (kind, external id) -> hissuno id
        self._errors: list[tuple[Any, ...]] = []
        self._resolved: set[tuple[str, str]] = set()  # open errors whose record this batch ingested
        # Contacts to upsert at the flush, by lower-cased email: (record, id, restore). One per email and
        # batch: a second version of a buffered person flushes the batch first (one upsert cannot
        # touch a row twice, and the merge strategies are defined over successive writes).
        self._contacts: dict[str, tuple[ContactRecord, str, bool]] = {}
        self._pending = 0

    def _record(self, kind: str, hid: str, ext: str, h: str, ts: datetime | None) -> None:
        self._synced_rows[(kind, ext)] = [self.connection_id, self.stream_id, ext, hid, kind, h, ts]
        self._map()[(kind, ext)] = (hid, h)
        self._stale_vectors.discard((kind, ext))  # queued for the current model
        self._deleted.discard((kind, ext))  # a restore: the write clears deleted_at
        self._deletes.pop((kind, ext), None)
        self._pending += 1

    def _maybe_flush(self) -> None:
        # After the record's progress event, so the counts a flush stores include every record it writes.
        if self._pending >= self.batch_size:
            self.flush()

    def _write(self, fn: Callable[[], Any], what: str) -> Any:
        """An immediate write, retried in place through a store blip (on the store's own connections)."""
        return retry_transient(fn, what) if isinstance(self.store, Store) else fn()

    @staticmethod
    def _buffer(buf: dict[str, tuple[list[Any], bool]], row: list[Any], action: str) -> None:
        # Created earlier in this batch and changed since: still a creation, of the later version.
        prev = buf.get(row[0])
        buf[row[0]] = (row, action == "created" or (prev is not None and prev[1]))

    def _fail(self, kind: str, raw: Any, reason: str) -> IngestResult:
        ext = None
        if isinstance(raw, BaseModel):
            ext = getattr(raw, "external_id", None)
        elif isinstance(raw, dict):
            ext = raw.get("external_id")
        ext = None if ext is None else str(ext)
        # Whatever the plugin passed (datetimes, decimals, bytes, models) is kept as JSON; what cannot be
        # serialised is kept as its text, so the failure itself is never lost.
        kept = to_jsonable_python(raw, fallback=str)
        masked = redact(kept, secrets=self.secrets)
        reason = redact_text(reason, self.secrets)
        self._errors.append((self.connection_id, self.stream_id, self.run_id, kind, ext, reason[:2000],
                             _jsonb(masked), masked != kept))
        if ext is not None:
            self._open_errors.add((kind, ext))
            self._resolved.discard((kind, ext))
        self._on_event(ProgressEvent(type="failed", external_id=ext, message=f"{kind}: {reason[:300]}"))
        return IngestResult(id=None, kind=kind, action="failed", error=reason)

    def _resolve(self, kind: str, ext: str) -> None:
        if (kind, ext) in self._open_errors:
            self._open_errors.discard((kind, ext))
            self._resolved.add((kind, ext))

    def _validate(self, model: type[BaseModel], kind: str, record: Any,
                  fields: dict[str, Any]) -> tuple[Any, str] | IngestResult:
        """The validated record and its content hash, or the failure (recorded)."""
        if record is None:
            record = fields
        try:
            if isinstance(record, model):
                return record, content_hash(record)
            if isinstance(record, BaseModel):
                record = record.model_dump()
            rec, dumped = validated_with_json(model, record)
            return rec, _hash_json(dumped)
        except ValidationError as exc:
            reason = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)
            )
            return self._fail(kind, record, f"invalid record: {reason}")
        except PydanticSerializationError as exc:  # a value in a free map (metadata) that JSON cannot hold
            return self._fail(kind, record, f"invalid record: {exc}")

    def _in_window(self, rec: Any, kind: str) -> bool:
        lo, hi = self.window
        ts = rec.updated_at
        if ts is None or (lo is None and hi is None):
            return True
        if (lo is not None and ts < lo) or (hi is not None and ts >= hi):
            if self._counts(kind):
                self._on_event(ProgressEvent(type="skipped", external_id=rec.external_id,
                                             message=f"{kind} outside the run's window"))
            return False
        return True

    def _classify_existing(self, kind: str, rec: Any, h: str) -> tuple[str, str | None]:
        """(action, existing id) of a record with content hash ``h``: created, updated or unchanged."""
        key = (kind, rec.external_id)
        prev = self._map().get(key)
        if prev is None:
            return "created", None
        if key in self._deleted:
            return "updated", prev[0]  # restored at its source: write it again, clearing deleted_at
        if prev[1] == h and key not in self._stale_vectors:
            return "unchanged", prev[0]
        # Changed content, or a vector made by another embedding model: rewrite and re-embed.
        return "updated", prev[0]

    def _counts(self, kind: str) -> bool:
        return self.primary_kind is None or kind == self.primary_kind

    def _done(self, kind: str, rec: Any, hid: str, action: str) -> IngestResult:
        self._resolve(kind, rec.external_id)
        if rec.updated_at is not None:
            self._on_timestamp(rec.updated_at)
        if self._counts(kind):
            self._on_event(ProgressEvent(
                type="skipped" if action == "unchanged" else "synced", external_id=rec.external_id,
                hissuno_id=hid, message=f"{kind} {action}",
            ))
        self._maybe_flush()
        return IngestResult(id=hid, kind=kind, action=action)  # type: ignore[arg-type]

    # -- primitives ------------------------------------------------------------------------

    def session(self, record: SessionRecord | None = None, /, **fields: Any) -> IngestResult:
        """Upsert a session and its messages."""
        got = self._validate(SessionRecord, "sessions", record, fields)
        if isinstance(got, IngestResult):
            return got
        rec, h = got
        if not self._in_window(rec, "sessions"):
            return IngestResult(id=None, kind="sessions", action="unchanged")
        action, hid = self._classify_existing("sessions", rec, h)
        if action == "unchanged":
            assert hid is not None
            return self._done("sessions", rec, hid, action)
        try:
            contact_id = None
            email = rec.contact_email or _metadata_email(rec.user_metadata)
            if rec.contact_email:
                contact_id = self._session_contact(rec.contact_email, rec.contact_name)
            sid = uuid.UUID(hid) if hid else uuid.uuid4()
            hid = hid or str(sid)
            now = datetime.now(UTC)
            msgs = rec.messages
            first = rec.first_message_at or (msgs[0].created_at if msgs and msgs[0].created_at else None) \
                or rec.created_at or rec.updated_at or now
            last = rec.last_activity_at or (msgs[-1].created_at if msgs and msgs[-1].created_at else None) \
                or rec.updated_at or first
            pairs = [(m.sender_type, m.content) for m in msgs]
            tags = self._classify(pairs)
            row = [hid, self.project_id, contact_id, rec.name, rec.description, rec.status, rec.source,
                   rec.session_type, tags, len(msgs), _jsonb(rec.user_metadata), _jsonb(rec.custom_fields),
                   first if msgs else rec.first_message_at, last, rec.created_at or first, now]
            self._buffer(self._sessions, row, action)
            pid = self._project_uuid
            self._messages[hid] = [(sid, pid, pos, m.sender_type, m.sender_name, m.content, m.created_at or first)
                                   for pos, m in enumerate(msgs)]
            text = "\n\n".join(filter(None, [rec.name, rec.description,
                                             "\n".join(c for s, c in pairs if s == "user")[:3000]]))
            self.enricher.queue("session", hid, text, email=email)
            self._record("sessions", hid, rec.external_id, h, rec.updated_at)
        except Exception as exc:  # one bad record must not end the run; a store blip is not a bad record
            if is_transient(exc):
                raise
            return self._fail("sessions", rec, f"{type(exc).__name__}: {exc}")
        return self._done("sessions", rec, hid, action)

    def issue(self, record: IssueRecord | None = None, /, **fields: Any) -> IngestResult:
        """Upsert an issue (optionally linked to a session of this connection)."""
        got = self._validate(IssueRecord, "issues", record, fields)
        if isinstance(got, IngestResult):
            return got
        rec, h = got
        if not self._in_window(rec, "issues"):
            return IngestResult(id=None, kind="issues", action="unchanged")
        action, hid = self._classify_existing("issues", rec, h)
        if action == "unchanged":
            assert hid is not None
            return self._done("issues", rec, hid, action)
        hid = hid or str(uuid.uuid4())
        now = datetime.now(UTC)
        row = [hid, self.project_id, rec.name, rec.description, rec.type, rec.status, rec.priority,
               _jsonb(rec.custom_fields), rec.updated_at or now, now]
        self._buffer(self._issues, row, action)
        if rec.session_external_id:
            self._issue_links.append([hid, rec.session_external_id])
        self.enricher.queue("issue", hid, f"{rec.name}\n\n{rec.description}")
        self._record("issues", hid, rec.external_id, h, rec.updated_at)
        return self._done("issues", rec, hid, action)

    def knowledge(self, record: KnowledgeRecord | None = None, /, **fields: Any) -> IngestResult:
        """Upsert a knowledge source; its markdown content is chunked and every chunk embedded."""
        got = self._validate(KnowledgeRecord, "knowledge", record, fields)
        if isinstance(got, IngestResult):
            return got
        rec, h = got
        if not self._in_window(rec, "knowledge"):
            return IngestResult(id=None, kind="knowledge", action="unchanged")
        action, hid = self._classify_existing("knowledge", rec, h)
        if action == "unchanged":
            assert hid is not None
            return self._done("knowledge", rec, hid, action)
        hid = hid or str(uuid.uuid4())
        now = datetime.now(UTC)
        parent = None
        if rec.parent_external_id:
            prev = self._map().get(("knowledge", rec.parent_external_id))
            parent = prev[0] if prev else None
        status = "done" if rec.content or rec.type == "folder" else "pending"
        row = [hid, self.project_id, parent, rec.name, rec.description, rec.type, status, rec.url,
               rec.content, rec.origin, _jsonb(rec.custom_fields), rec.enabled,
               now if rec.content else None, rec.updated_at or now, now]
        self._buffer(self._knowledge, row, action)
        chunks = self._chunks[hid] = []
        self.enricher.queue("knowledge_source", hid,
                            "\n\n".join(filter(None, [rec.name, rec.description, (rec.content or "")[:3000]])))
        for ch in chunk_markdown(rec.content or ""):
            cid = str(uuid.uuid5(uuid.UUID(hid), str(ch.index)))
            chunks.append([cid, hid, self.project_id, ch.index, ch.text, ch.start_line, ch.end_line,
                           ch.heading, list(ch.parents)])
            heading = " > ".join((*ch.parents, ch.heading)) if ch.heading else ""
            self.enricher.queue("knowledge_chunk", cid, f"{heading}\n{ch.text}".strip(), graph=False)
        self._record("knowledge", hid, rec.external_id, h, rec.updated_at)
        return self._done("knowledge", rec, hid, action)

    def contact(self, record: ContactRecord | None = None, /, **fields: Any) -> IngestResult:
        """Upsert a contact by (project, lower(email)), merging per ``merge_strategy``."""
        got = self._validate(ContactRecord, "contacts", record, fields)
        if isinstance(got, IngestResult):
            return got
        rec, h = got
        if not self._in_window(rec, "contacts"):
            return IngestResult(id=None, kind="contacts", action="unchanged")
        action, hid = self._classify_existing("contacts", rec, h)
        if action == "unchanged":
            assert hid is not None
            return self._done("contacts", rec, hid, action)
        try:
            cid = self._buffer_contact(rec, hid, restore=True)
        except Exception as exc:
            if is_transient(exc):
                raise
            return self._fail("contacts", rec, f"{type(exc).__name__}: {exc}")
        # A session naming this person next (the usual order: customer, then conversation) would
        # upsert the same row again to no effect (fill_nulls on a contact just written).
        self._session_contacts[(rec.email.lower(), rec.name)] = cid
        self._record("contacts", cid, rec.external_id, h, rec.updated_at)
        # "created": new to this stream (whether another stream wrote the person before is known at the flush).
        return self._done("contacts", rec, cid, action)

    def company(self, record: CompanyRecord | None = None, /, **fields: Any) -> IngestResult:
        """Upsert a company by (project, lower(domain)); contacts with that email domain get linked."""
        got = self._validate(CompanyRecord, "companies", record, fields)
        if isinstance(got, IngestResult):
            return got
        rec, h = got
        if not self._in_window(rec, "companies"):
            return IngestResult(id=None, kind="companies", action="unchanged")
        action, hid = self._classify_existing("companies", rec, h)
        if action == "unchanged":
            assert hid is not None
            return self._done("companies", rec, hid, action)
        try:
            cid, created = self._write(lambda: self._upsert_company_row(rec, restore=True), "writing a company")
        except Exception as exc:
            if is_transient(exc):
                raise
            return self._fail("companies", rec, f"{type(exc).__name__}: {exc}")
        self._record("companies", cid, rec.external_id, h, rec.updated_at)
        return self._done("companies", rec, cid, "created" if created and action == "created" else "updated")

    def delete(self, kind: str, external_id: str | int, /) -> IngestResult:
        """Mark the entity this stream made from ``external_id`` deleted (see ``kit.context.Ingest.delete``)."""
        entity_kind = delete_kind(kind)
        ext = str(external_id)
        key = (entity_kind, ext)
        prev = self._map().get(key)
        self._resolve(entity_kind, ext)  # gone at its source: nothing left to recover
        if prev is None or key in self._deleted:
            action = "missing" if prev is None else "unchanged"
            if self._counts(entity_kind):
                why = "never synced" if prev is None else "already deleted"
                self._on_event(ProgressEvent(type="skipped", external_id=ext,
                                             hissuno_id=None if prev is None else prev[0],
                                             message=f"{entity_kind} {why}"))
            return IngestResult(id=None if prev is None else prev[0], kind=entity_kind,
                                action=action)  # type: ignore[arg-type]
        self._deleted.add(key)
        self._deletes[key] = prev[0]
        if self._counts(entity_kind):
            self._on_event(ProgressEvent(type="deleted", external_id=ext, hissuno_id=prev[0],
                                         message=f"{entity_kind} deleted"))
        self._pending += 1
        self._maybe_flush()
        return IngestResult(id=prev[0], kind=entity_kind, action="deleted")

    # -- immediate upserts -----------------------------------------------------------------

    def _upsert_company_row(self, rec: CompanyRecord, *, restore: bool = False) -> tuple[str, bool]:
        # ``restore``: the company primitive itself clears a deletion; the company a contact implies does not.
        fields = {"name": rec.name, "industry": rec.industry, "country": rec.country,
                  "employee_count": rec.employee_count, "notes": rec.notes}
        sets = _merge_sets(fields, rec.merge_strategy, "companies") + (", deleted_at = NULL" if restore else "")
        with use(self.store) as conn:
            row = conn.execute(
                f"""
                INSERT INTO companies (project_id, name, domain, industry, country, employee_count, notes,
                                       custom_fields)
                VALUES (%(p)s, coalesce(%(name)s, %(domain)s), %(domain)s, %(industry)s, %(country)s,
                        %(employee_count)s, %(notes)s, %(cf)s)
                ON CONFLICT (project_id, lower(domain)) DO UPDATE SET {sets}
                RETURNING id::text AS id, (xmax = 0) AS created
                """,
                {"p": self.project_id, "domain": rec.domain, "cf": _jsonb(rec.custom_fields), **fields},
            ).fetchone()
            assert row is not None
            # Contacts whose mail domain is this company's join it (contact<->company by email domain).
            linked = conn.execute(
                "UPDATE contacts SET company_id = %s, updated_at = now() WHERE project_id = %s "
                "AND company_id IS NULL AND lower(split_part(email, '@', 2)) = lower(%s) RETURNING id::text",
                (row["id"], self.project_id, rec.domain),
            ).fetchall()
            for c in linked:
                _edge(conn, self.project_id, "contact", c["id"], "company", row["id"], "email_domain")
        if isinstance(self.store, Store):  # committed (a caller's transaction may still roll back)
            self._company_ids[rec.domain.lower()] = row["id"]
        self.enricher.queue("company", row["id"], "\n".join(filter(None, [
            rec.name or rec.domain, rec.domain, rec.industry and f"Industry: {rec.industry}",
            rec.country and f"Country: {rec.country}", rec.notes and f"Notes: {rec.notes}"])), graph=False)
        return row["id"], bool(row["created"])

    def _session_contact(self, email: str, name: str | None) -> str:
        """The contact a session names, upserted once per run and (email, name) instead of once per
        session: a first sync wrote and committed each person again for each of their conversations."""
        key = (email.lower(), name)
        cid = self._session_contacts.get(key)
        if cid is None:
            known = self._contact_ids.get(email.strip().lower())
            if known is not None and name is None:
                return known  # a nameless mention of a person this run wrote adds nothing to them
            contact = ContactRecord(external_id=f"session-contact:{email.lower()}", email=email, name=name)
            cid = self._session_contacts[key] = self._buffer_contact(contact, None, restore=False)
        return cid

    def _company_id(self, domain: str) -> str | None:
        """The id of the project's company with ``domain`` (lower case), looked up once per run: companies
        are never removed (a deletion is a mark) and the domain is their key, so an id once seen stays."""
        cid = self._company_ids.get(domain)
        if cid is None:
            with use(self.store) as conn:
                found = conn.execute(
                    "SELECT id::text FROM companies WHERE project_id = %s AND lower(domain) = %s",
                    (self.project_id, domain),
                ).fetchone()
            cid = found["id"] if found else None
            if cid is not None and isinstance(self.store, Store):
                self._company_ids[domain] = cid
        return cid

    def _buffer_contact(self, rec: ContactRecord, hid: str | None, *, restore: bool) -> str:
        """Queue ``rec`` for the flush's upsert and return the person's id (``hid``: the stream's own)."""
        # ``restore``: the contact primitive itself clears a deletion; a session's contact does not.
        email = rec.email.strip().lower()
        if email in self._contacts:
            self.flush()
        cid = hid or self._contact_ids.get(email) or str(uuid.uuid5(self._project_uuid, email))
        if rec.company_domain:
            domain = bare_domain(rec.company_domain)
            if self._company_id(domain) is None:  # the named company, made when missing (immediately: few)
                self._upsert_company_row(CompanyRecord(external_id=f"domain:{rec.company_domain}",
                                                       domain=rec.company_domain))
        self._contacts[email] = (rec, cid, restore)
        self._contact_ids[email] = cid
        self.enricher.queue("contact", cid, "\n".join(filter(None, [
            rec.name, rec.email, rec.title and f"Title: {rec.title}"])), graph=False)
        return cid

    def _write_contacts(self, cur: Any) -> None:
        """Upsert the buffered contacts, set-based, before the sessions that point at them.

        Sorted by email, so two batches upserting the same people lock them in one order. A person
        whose row already exists under another id (made by an older version) keeps that id: the
        batch's sessions, synced records and queued enrichment are re-pointed at it."""
        groups: dict[tuple[str, bool], list[tuple[str, ContactRecord, str]]] = {}
        for email, (rec, cid, restore) in sorted(self._contacts.items()):
            groups.setdefault((rec.merge_strategy, restore), []).append((email, rec, cid))
        moved: dict[str, str] = {}
        for (strategy, restore), rows in groups.items():
            fields = dict.fromkeys(("name", "phone", "title", "company_id"))
            sets = _merge_sets(fields, strategy, "contacts") + (", deleted_at = NULL" if restore else "")
            # The company: the one the record names, else the one of the mail domain (generic mail
            # providers excepted), looked up here, when every company of the batch is written.
            domains = [bare_domain(rec.company_domain or "") or email_domain(rec.email) for _, rec, _ in rows]
            cur.execute(
                f"""
                WITH up AS (
                    INSERT INTO contacts (id, project_id, name, email, phone, title, company_id, custom_fields)
                    -- The stream's id for a person whose email changed at the source names the row of
                    -- the old address: the new address gets a row (and id) of its own, as before.
                    SELECT CASE WHEN EXISTS (SELECT 1 FROM contacts o WHERE o.id = x.id
                                             AND lower(o.email) <> lower(x.email)) THEN gen_random_uuid()
                                ELSE x.id END,
                           %(p)s, coalesce(x.name, x.email), x.email, x.phone, x.title,
                           (SELECT c.id FROM companies c WHERE c.project_id = %(p)s AND lower(c.domain) = x.domain),
                           x.cf
                    FROM unnest(%(id)s::uuid[], %(name)s::text[], %(email)s::text[], %(phone)s::text[],
                                %(title)s::text[], %(domain)s::text[], %(cf)s::jsonb[], %(ord)s::int[])
                         AS x(id, name, email, phone, title, domain, cf, ord)
                    ORDER BY x.ord
                    ON CONFLICT (project_id, lower(email)) DO UPDATE SET {sets}
                    RETURNING id, company_id, lower(email) AS email
                ), edge AS (
                    INSERT INTO entity_relationships (project_id, source_type, source_id, target_type,
                                                      target_id, strategy)
                    SELECT %(p)s, 'company', company_id, 'contact', id, 'email_domain' FROM up
                    WHERE company_id IS NOT NULL
                    ON CONFLICT DO NOTHING
                )
                SELECT id::text AS id, email FROM up
                """,
                {"p": self.project_id, "id": [cid for _, _, cid in rows], "name": [r.name for _, r, _ in rows],
                 "email": [r.email for _, r, _ in rows], "phone": [r.phone for _, r, _ in rows],
                 "title": [r.title for _, r, _ in rows], "domain": domains,
                 "cf": [_jsonb(r.custom_fields) for _, r, _ in rows], "ord": list(range(len(rows)))},
            )
            ours = {email: cid for email, _, cid in rows}
            for row in cur.fetchall():
                if row["id"] != ours[row["email"]]:
                    moved[ours[row["email"]]] = row["id"]
        if moved:
            self._repoint_contacts(moved)

    def _repoint_contacts(self, moved: dict[str, str]) -> None:
        """The batch's contact ids ``moved`` (ours -> the stored row's) now name the stored rows."""
        for row, _ in self._sessions.values():
            if row[2] in moved:
                row[2] = moved[row[2]]
        for key, synced in self._synced_rows.items():
            if key[0] == "contacts" and synced[3] in moved:
                synced[3] = moved[synced[3]]
                self._map()[key] = (synced[3], synced[5])
        for email, (rec, cid, restore) in list(self._contacts.items()):
            if cid in moved:
                self._contacts[email] = (rec, moved[cid], restore)
                self._contact_ids[email] = moved[cid]
        for person, cid in list(self._session_contacts.items()):
            if cid in moved:
                self._session_contacts[person] = moved[cid]
        for ours, stored in moved.items():
            self.enricher.rename("contact", ours, stored)

    # -- bulk flush ------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every buffered row in one transaction (retried in place through a store blip), then run
        queued enrichment once enough is queued."""
        if self._pending == 0 and not self._errors and not self._deletes and not self._resolved \
                and not self._contacts:
            return
        self._write(self._flush_once, "writing a batch of records")
        self._reset_buffers()
        if len(self.enricher) >= ENRICH_PASS:
            self.enricher.run(keep_deferred=True)  # ``close`` runs the rest and builds deferred indexes

    def _flush_once(self) -> None:
        with use(self.store) as conn, conn.transaction(), conn.cursor() as cur:
            if self.fence is not None:
                self.fence(conn)
            claimed = self._claim(cur)
            if self._contacts:
                self._write_contacts(cur)
            new = [r for r, created in self._sessions.values() if created]
            upd = [r for r, created in self._sessions.values() if not created]
            if new:
                pid = self._project_uuid
                copy_rows(cur, "sessions", _SESSION_COLS,
                      ((uuid.UUID(r[0]), pid, r[2] and uuid.UUID(r[2]), *r[3:]) for r in new), _SESSION_TYPES)
            if upd:
                cur.executemany(
                    "UPDATE sessions SET contact_id = coalesce(%s, contact_id), name = %s, description = %s, "
                    "status = %s, source = %s, session_type = %s, tags = %s, message_count = %s, "
                    "user_metadata = %s, custom_fields = %s, first_message_at = %s, last_activity_at = %s, "
                    "updated_at = %s, deleted_at = NULL WHERE id = %s",
                    [(*r[2:14], r[15], r[0]) for r in upd],
                )
                cur.execute("DELETE FROM session_messages WHERE session_id = ANY(%s)", ([r[0] for r in upd],))
            if any(self._messages.values()):
                copy_rows(cur, "session_messages", _MESSAGE_COLS, chain.from_iterable(self._messages.values()),
                          _MESSAGE_TYPES)
            new = [r for r, created in self._issues.values() if created]
            upd = [r for r, created in self._issues.values() if not created]
            if new:
                copy_rows(cur, "issues", _ISSUE_COLS, new)
            if upd:
                cur.executemany(
                    "UPDATE issues SET name = %s, description = %s, type = %s, status = %s, priority = %s, "
                    "custom_fields = %s, updated_at = %s, deleted_at = NULL WHERE id = %s",
                    [(*r[2:8], r[9], r[0]) for r in upd],
                )
            new = [r for r, created in self._knowledge.values() if created]
            upd = [r for r, created in self._knowledge.values() if not created]
            if new:
                copy_rows(cur, "knowledge_sources", _KNOWLEDGE_COLS, new)
            if upd:
                cur.executemany(
                    "UPDATE knowledge_sources SET parent_id = %s, name = %s, description = %s, type = %s, "
                    "status = %s, url = %s, content = %s, origin = %s, custom_fields = %s, enabled = %s, "
                    "analyzed_at = %s, updated_at = %s, deleted_at = NULL WHERE id = %s",
                    [(*r[2:13], r[14], r[0]) for r in upd],
                )
                cur.execute("DELETE FROM knowledge_chunks WHERE source_id = ANY(%s)", ([r[0] for r in upd],))
            chunks = [c for cs in self._chunks.values() for c in cs]
            if chunks:
                copy_rows(cur, "knowledge_chunks", ("id", *_CHUNK_COLS), chunks)
            # Keys ``_claim`` inserted this transaction are written already; the rest in one statement.
            rest = [r for key, r in self._synced_rows.items() if key not in claimed]
            if rest:
                cur.execute(
                    "INSERT INTO integration_synced_records (connection_id, stream_id, external_id, hissuno_id,"
                    " hissuno_kind, content_hash, source_updated_at)"
                    " SELECT %s, %s, x.e, x.h::uuid, x.k, x.c, x.t FROM unnest(%s::text[], %s::text[], %s::text[],"
                    " %s::text[], %s::timestamptz[]) AS x(e, h, k, c, t)"
                    " ON CONFLICT (connection_id, stream_id, hissuno_kind, external_id) DO UPDATE SET"
                    " hissuno_id = EXCLUDED.hissuno_id, content_hash = EXCLUDED.content_hash,"
                    " source_updated_at = EXCLUDED.source_updated_at, updated_at = now(), deleted_at = NULL",
                    (self.connection_id, self.stream_id, [r[2] for r in rest], [r[3] for r in rest],
                     [r[4] for r in rest], [r[5] for r in rest], [r[6] for r in rest]),
                    binary=True,  # arrays in binary: the text format checks each element for quoting
                )
            if self._deletes:
                self._apply_deletes(cur)
            for issue_id, session_ext in self._issue_links:
                cur.execute(
                    "INSERT INTO entity_relationships (project_id, source_type, source_id, target_type,"
                    " target_id, strategy, metadata) SELECT %s, 'issue', %s, 'session', r.hissuno_id,"
                    " 'programmatic', '{\"source\": \"issue-link\"}' FROM integration_synced_records r"
                    " WHERE r.connection_id = %s AND r.hissuno_kind = 'sessions' AND r.external_id = %s"
                    " ON CONFLICT DO NOTHING",
                    (self.project_id, issue_id, self.connection_id, session_ext),
                )
            if self._errors:
                # One open row per record: a record that fails again updates it.
                cur.executemany(
                    "INSERT INTO ingest_errors (connection_id, stream_id, run_id, kind, external_id, reason,"
                    " record, redacted) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (connection_id, stream_id, kind, external_id) WHERE status = 'open'"
                    " DO UPDATE SET run_id = EXCLUDED.run_id, reason = EXCLUDED.reason, record = EXCLUDED.record,"
                    " redacted = EXCLUDED.redacted, updated_at = now()",
                    self._errors,
                )
            if self._resolved:
                cur.execute(
                    "UPDATE ingest_errors e SET status = 'resolved', resolved_at = now(), resolved_run_id = %s,"
                    " updated_at = now() FROM unnest(%s::text[], %s::text[]) AS d(kind, ext)"
                    " WHERE e.connection_id = %s AND e.stream_id = %s AND e.status = 'open'"
                    " AND e.kind = d.kind AND e.external_id = d.ext",
                    (self.run_id, [k for k, _ in self._resolved], [e for _, e in self._resolved],
                     self.connection_id, self.stream_id),
                )
            self.enricher.save_pending(cur, connection_id=self.connection_id, stream_id=self.stream_id,
                                       run_id=self.run_id, release_texts=isinstance(self.store, Store))

    def _claim(self, cur: Any) -> set[tuple[str, str]]:
        """Insert-or-get the synced record of every entity this batch creates, before the entity itself.

        The key's uniqueness makes a second entity for one external id impossible: a key another writer
        holds already (a concurrent webhook, a run that lost its lease, or this batch's own earlier commit
        whose acknowledgement a blip swallowed) turns the buffered creation into an update of that entity.
        """
        buffers = {"sessions": self._sessions, "issues": self._issues, "knowledge": self._knowledge}
        fresh = [row for (kind, _), row in self._synced_rows.items()
                 if kind in buffers and buffers[kind].get(row[3], (None, False))[1]]
        if not fresh:
            return set()
        claimed = {(r[4], r[2]) for r in fresh}  # (kind, external id)
        try:
            # Usually no other writer holds any of the keys: COPY them in a savepoint, about 40% cheaper than
            # the upsert below (measured on bench/ingest.py). One held key fails the COPY; nothing of it stays.
            with cur.connection.transaction():
                copy_rows(cur, "integration_synced_records", _SYNCED_COLS,
                          ((*r[:3], uuid.UUID(r[3]), *r[4:]) for r in fresh), _SYNCED_TYPES)
            return claimed
        except UniqueViolation:
            pass  # some key is held: claim key by key, adopting the held ones
        cur.execute(
            "WITH claim AS (INSERT INTO integration_synced_records (connection_id, stream_id, external_id,"
            " hissuno_id, hissuno_kind, content_hash, source_updated_at)"
            " SELECT %s, %s, x.e, x.h::uuid, x.k, x.c, x.t"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[]) AS x(e, h, k, c, t)"
            " ON CONFLICT (connection_id, stream_id, hissuno_kind, external_id) DO UPDATE"
            " SET updated_at = integration_synced_records.updated_at"
            " RETURNING hissuno_kind, external_id, hissuno_id::text AS hid, (xmax = 0) AS inserted)"
            # Only the keys another writer holds come back (none on a first sync): the rest are ours.
            " SELECT hissuno_kind, external_id, hid FROM claim WHERE NOT inserted",
            (self.connection_id, self.stream_id, [r[2] for r in fresh], [r[3] for r in fresh],
             [r[4] for r in fresh], [r[5] for r in fresh], [r[6] for r in fresh]),
            binary=True,  # arrays in binary: the text format checks each element for quoting
        )
        for held in cur.fetchall():
            claimed.discard((held["hissuno_kind"], held["external_id"]))
            self._adopt(held["hissuno_kind"], held["external_id"], held["hid"])
        return claimed

    def _adopt(self, kind: str, ext: str, existing: str) -> None:
        """Re-point this batch's creation of (kind, ext) at the entity ``existing`` that holds its key."""
        synced = self._synced_rows[(kind, ext)]
        ours = synced[3]
        synced[3] = existing
        self._map()[(kind, ext)] = (existing, synced[5])
        etype = {"sessions": "session", "issues": "issue", "knowledge": "knowledge_source"}[kind]
        self.enricher.rename(etype, ours, existing)
        buf = {"sessions": self._sessions, "issues": self._issues, "knowledge": self._knowledge}[kind]
        row, _ = buf.pop(ours)
        row[0] = existing
        buf[existing] = (row, False)
        if kind == "sessions":
            sid = uuid.UUID(existing)
            self._messages[existing] = [(sid, *m[1:]) for m in self._messages.pop(ours, [])]
        elif kind == "issues":
            for link in self._issue_links:
                if link[0] == ours:
                    link[0] = existing
        else:
            for other, _ in self._knowledge.values():
                if other[2] == ours:
                    other[2] = existing
            chunks = self._chunks[existing] = self._chunks.pop(ours, [])
            for c in chunks:
                cid = str(uuid.uuid5(uuid.UUID(existing), str(c[3])))
                self.enricher.rename("knowledge_chunk", c[0], cid)
                c[0], c[1] = cid, existing

    def _apply_deletes(self, cur: Any) -> None:
        """Mark the buffered deletions (after this flush's writes, so a record made and deleted in one
        batch ends deleted): first the synced records, then each entity no live record points at."""
        kinds = [k for k, _ in self._deletes]
        exts = [e for _, e in self._deletes]
        cur.execute(
            "UPDATE integration_synced_records r SET deleted_at = now(), updated_at = now()"
            " FROM unnest(%s::text[], %s::text[]) AS d(kind, ext)"
            " WHERE r.connection_id = %s AND r.stream_id = %s AND r.hissuno_kind = d.kind"
            " AND r.external_id = d.ext AND r.deleted_at IS NULL",
            (kinds, exts, self.connection_id, self.stream_id),
        )
        for kind, table in ENTITY_TABLES.items():
            ids = [hid for (k, _), hid in self._deletes.items() if k == kind]
            if not ids:
                continue
            # Contacts and companies are shared (unique by email / domain): one that another live
            # source still has stays visible.
            cur.execute(
                f"UPDATE {table} t SET deleted_at = now() WHERE t.id = ANY(%s::uuid[]) AND t.deleted_at IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM integration_synced_records r WHERE r.hissuno_id = t.id"
                " AND r.hissuno_kind = %s AND r.deleted_at IS NULL)",
                (ids, kind),
            )

    def close(self) -> None:
        """Flush and finish queued enrichment."""
        self.flush()
        self.enricher.run()


def _merge_sets(fields: dict[str, Any], strategy: str, table: str) -> str:
    if strategy == "never_overwrite":
        return "updated_at = " + table + ".updated_at"
    parts = []
    for k in fields:
        if strategy == "overwrite":
            parts.append(f"{k} = coalesce(EXCLUDED.{k}, {table}.{k})")
        else:  # fill_nulls
            parts.append(f"{k} = coalesce({table}.{k}, EXCLUDED.{k})")
    parts.append(f"custom_fields = {table}.custom_fields || EXCLUDED.custom_fields")
    parts.append("updated_at = now()")
    return ", ".join(parts)


_EMAIL_KEYS = ("email", "Email", "EMAIL", "e-mail", "E-mail", "emailAddress", "email_address")


def _metadata_email(meta: dict[str, Any]) -> str | None:
    for k in _EMAIL_KEYS:
        v = meta.get(k)
        if isinstance(v, str) and "@" in v:
            return v.strip().lower()
    return None


def _edge(conn: Any, project_id: str, a_type: str, a_id: str, b_type: str, b_id: str, strategy: str,
          similarity: float | None = None) -> None:
    (s_t, s_i), (t_t, t_i) = sorted([(a_type, a_id), (b_type, b_id)])
    conn.execute(
        "INSERT INTO entity_relationships (project_id, source_type, source_id, target_type, target_id,"
        " strategy, similarity) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (project_id, s_t, s_i, t_t, t_i, strategy, similarity),
    )
