"""What a plugin hands to ``ctx.ingest.*``: one validated record type per primitive.

Every record carries ``external_id`` (the dedup key within a connection and stream) and an optional
``updated_at``: the provider's own timestamp for the record, from which the runtime computes the
next ``last_sync_at`` (a high-water mark, never the wall clock).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import to_json

from .types import (
    IssuePriority,
    IssueStatus,
    IssueType,
    KnowledgeType,
    MergeStrategy,
    SenderType,
)


def _without_nul(v: Any) -> Any:
    """``v`` with NUL characters removed from every string in it.

    PostgreSQL text and jsonb cannot hold U+0000, and providers do send it (binary pasted into a ticket, a
    C string from an old export): one such field would fail the record's whole batch. The character carries
    no meaning in text, so it is dropped here, once, for every plugin.
    """
    if isinstance(v, str):
        return v.replace("\x00", "") if "\x00" in v else v
    if isinstance(v, BaseModel):  # a ``Message`` (or a record) built on its own, inside the data
        return _without_nul(v.model_dump())
    if isinstance(v, dict):
        return {_without_nul(k): _without_nul(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_without_nul(x) for x in v)
    return v


def _scrubbed(data: Any) -> Any:
    """``data`` without NUL characters, checked in one pass: the Rust JSON encoder escapes a NUL anywhere in
    the record (keys, nested lists and maps) as ``\\u0000``, so the Python walk runs only for a record that
    has one. (A field-by-field walk was a third of a session's validation, on records that almost never
    hold a NUL.)"""
    try:
        clean = b"\\u0000" not in to_json(data, fallback=str)
    except ValueError:  # a structure JSON cannot express (a cycle): walk it
        clean = False
    return data if clean else _without_nul(data)


_R = TypeVar("_R", bound=BaseModel)

_DEFER_NUL_CHECK = {"defer_nul_check": True}
"""Validation context of ``validated_with_json``: the record's NUL check is done on its JSON instead."""


def hashed_json(record: BaseModel) -> str:
    """The JSON of ``record`` that ingestion's content hash is made of: everything but ``updated_at``."""
    return record.model_dump_json(exclude={"updated_at"})


def validated_with_json(model: type[_R], data: Any) -> tuple[_R, str]:
    """``model.model_validate(data)`` and the record's ``hashed_json``, with NUL characters removed as on
    any validation, in one JSON encoding instead of two.

    A record is encoded for its content hash anyway, and the encoder escapes a NUL anywhere in it as
    ``\\u0000``: so the NUL check reads that JSON rather than encoding the input a second time (a tenth of an
    ingested session's cost). A record that has a NUL, or that does not validate (a NUL may be why), is
    validated again the checked way, which cleans it or raises its own error."""
    try:
        rec = model.model_validate(data, context=_DEFER_NUL_CHECK)
    except ValidationError:
        rec = None
    if rec is not None:
        dumped = hashed_json(rec)
        if "\\u0000" not in dumped:
            return rec, dumped
    rec = model.model_validate(data)
    return rec, hashed_json(rec)


def bare_domain(value: str) -> str:
    """A domain as companies are keyed by: lower case, without scheme, ``www.`` or slashes."""
    return value.lower().removeprefix("https://").removeprefix("http://").removeprefix("www.").strip("/")


def _aware(v: datetime | None) -> datetime | None:
    if v is not None and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    return v


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    external_id: str = Field(min_length=1, max_length=512)
    """Stable provider id of the record; the dedup key within (connection, stream)."""
    updated_at: datetime | None = None
    """Provider time of the record's last change; feeds the high-water-mark cursor."""

    @field_validator("external_id", mode="before")
    @classmethod
    def _id_to_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    @model_validator(mode="before")
    @classmethod
    def _nul(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context is _DEFER_NUL_CHECK:
            return data  # ``validated_with_json`` checks the record's JSON instead
        return _scrubbed(data)

    @field_validator("*", mode="after")
    @classmethod
    def _tz(cls, v: Any) -> Any:
        return _aware(v) if isinstance(v, datetime) else v


class Message(BaseModel):
    """One message of a session."""

    # No NUL check of its own: a message is stored only as part of its session, and the session's check
    # covers its messages, dicts and ``Message`` objects alike (a check here ran a Python function for every
    # message of every session).
    model_config = ConfigDict(frozen=True, extra="forbid")

    sender_type: SenderType
    """Who wrote it: ``user`` (the customer), ``human_agent``, ``ai`` or ``system``."""
    content: str = Field(min_length=1)
    """Message text (markdown allowed)."""
    created_at: datetime | None = None
    """When it was written; defaults to the session's first message time."""
    sender_name: str | None = None
    """Display name of the author, when known."""

    @field_validator("created_at", mode="after")
    @classmethod
    def _tz(cls, v: datetime | None) -> datetime | None:
        return _aware(v)


class SessionRecord(_Record):
    """A conversation (ticket, chat, call, thread) with its messages."""

    source: str = Field(min_length=1)
    """Where it came from: the plugin id or one of the app's session sources."""
    session_type: str = "chat"
    """``chat``, ``meeting`` or ``behavioral``."""
    status: str = "closed"
    """``active`` or ``closed``."""
    name: str | None = None
    """Title of the conversation."""
    description: str | None = None
    """Short summary."""
    user_metadata: dict[str, Any] = Field(default_factory=dict)
    """Free map; ``email``/``name`` drive contact resolution."""
    messages: list[Message] = Field(default_factory=list)
    """All messages; a changed list replaces the stored one."""
    first_message_at: datetime | None = None
    """Time of the first message."""
    last_activity_at: datetime | None = None
    """Time of the last activity."""
    created_at: datetime | None = None
    """Provider creation time."""
    contact_email: str | None = None
    """Email of the customer; the contact is upserted and linked."""
    contact_name: str | None = None
    """Name of that contact."""
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    """Provider extras worth keeping."""


class ContactRecord(_Record):
    """A person; unique per project by lower-cased email."""

    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    """Email address (matched case-insensitively; at most 320 characters, the longest an address can be:
    a longer one could not be indexed and is refused by name, into ``ingest_errors``)."""
    name: str | None = None
    """Full name."""
    phone: str | None = None
    """Phone number."""
    title: str | None = None
    """Job title."""
    company_domain: str | None = None
    """Domain of their company; the company is upserted and linked."""
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    """Provider extras."""
    merge_strategy: MergeStrategy = "fill_nulls"
    """How to merge into an existing contact with the same email."""


class CompanyRecord(_Record):
    """An organisation; unique per project by lower-cased domain."""

    domain: str = Field(min_length=3)
    """Primary web domain, e.g. ``acme.com``."""
    name: str | None = None
    """Display name (defaults to the domain)."""
    industry: str | None = None
    """Industry."""
    country: str | None = None
    """Country."""
    employee_count: int | None = None
    """Head count."""
    notes: str | None = None
    """Free notes."""
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    """Provider extras."""
    merge_strategy: MergeStrategy = "fill_nulls"
    """How to merge into an existing company with the same domain."""

    @field_validator("domain", mode="after")
    @classmethod
    def _domain(cls, v: str) -> str:
        v = bare_domain(v)
        if "." not in v or " " in v:
            msg = f"expected a domain such as acme.com; got {v!r}"
            raise ValueError(msg)
        return v


class IssueRecord(_Record):
    """A bug, feature request or change request."""

    name: str = Field(min_length=1)
    """Title."""
    description: str = ""
    """Body text."""
    type: IssueType = "change_request"
    """``bug``, ``feature_request`` or ``change_request``."""
    status: IssueStatus = "open"
    """Workflow status."""
    priority: IssuePriority = "low"
    """Priority."""
    session_external_id: str | None = None
    """External id of a session of the same connection to link to."""
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    """Provider identifiers (``linear_identifier``, ``jira_key``) and extras."""


class KnowledgeRecord(_Record):
    """A document; its content is chunked by markdown headings and embedded."""

    type: KnowledgeType = "raw_text"
    """Knowledge source type."""
    name: str | None = None
    """Title."""
    description: str | None = None
    """Summary."""
    url: str | None = None
    """Where it lives."""
    content: str | None = None
    """Markdown body; chunked and embedded when present."""
    origin: str | None = None
    """What produced it, e.g. ``notion_sync``."""
    parent_external_id: str | None = None
    """External id of the parent document, for trees."""
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    """Provider extras."""
    enabled: bool = True
    """Whether agents may use it."""
