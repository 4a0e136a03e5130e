"""The ``sample`` plugin: credential-free support data for a first run, demos and benchmarks.

It exercises every ingest primitive, an incremental cursor (records carry provider update times),
provider-side deletions (tombstones, ``ctx.ingest.delete``), a parameterized stream (knowledge spaces)
and validated filters and settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PField

from hissuno_airflow.kit import (
    ApiKeyAuth,
    AuthCtx,
    AuthResult,
    Field,
    Icon,
    InputError,
    ListCtx,
    ProviderUnavailable,
    Stream,
    StreamInstance,
    SyncCtx,
    define_plugin,
)
from hissuno_airflow.kit.types import Frequency

from . import data

LOGO = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'><rect width='32' height='32' rx='7' "
    "fill='#017cee'/><path d='M9 21c2 2 5 3 8 2s4-4 2-6-8-2-9-5 2-5 5-5 5 1 6 2' stroke='#fff' "
    "stroke-width='2.6' fill='none' stroke-linecap='round'/></svg>"
)


class SampleFilters(BaseModel):
    """Filters of the sample streams."""

    size: int = PField(default=200, ge=1, le=1_000_000)
    """How many records the sample workspace holds."""
    from_date: datetime | None = None
    """Ignore records updated before this time."""
    fail_after: int | None = PField(default=None, ge=0)
    """Simulate a provider outage after this many records (to try failure handling)."""


class KnowledgeSettings(BaseModel):
    """Settings of a knowledge space."""

    origin: str = "sample_help_center"
    """Origin recorded on each knowledge source."""


def _test(credentials: dict[str, Any], ctx: AuthCtx) -> AuthResult:
    workspace = (credentials.get("workspace") or "demo").strip().lower()
    if not workspace.replace("-", "").isalnum():
        raise InputError("workspace: expected letters, digits or '-'", field="workspace")
    every = int(credentials.get("every_seconds") or 3600)
    if every < 1:
        raise InputError("every_seconds: expected a positive number of seconds", field="every_seconds")
    raw_epoch = credentials.get("epoch")
    if raw_epoch:
        try:
            datetime.fromisoformat(str(raw_epoch))
        except ValueError:
            raise InputError("epoch: expected an ISO 8601 time such as 2026-01-01T00:00:00+00:00",
                             field="epoch") from None
    epoch = raw_epoch or (
        datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=7)
    ).isoformat()
    return AuthResult(
        external_account_id=workspace, account_label=f"Sample workspace {workspace}",
        credentials={"workspace": workspace, "epoch": str(epoch), "every_seconds": every},
    )


def _source(ctx: SyncCtx | ListCtx) -> data.SampleSource:
    c = ctx.credentials
    return data.SampleSource(c["workspace"], datetime.fromisoformat(c["epoch"]), int(c["every_seconds"]))


def _conversations(ctx: SyncCtx) -> Iterator[dict[str, Any]]:
    """The listing, one conversation at a time (as a provider's pages come), each reported found."""
    f: SampleFilters = ctx.filters
    src, since = _source(ctx), ctx.since(f.from_date)
    total = data.count_conversations(src, size=f.size, since=since, until=ctx.until)
    for n, conv in enumerate(data.conversations(src, size=f.size, since=since, until=ctx.until)):
        ctx.signal.raise_if_cancelled()
        if f.fail_after is not None and n >= f.fail_after:
            raise ProviderUnavailable("sample GET /conversations: 503 Service Unavailable", provider="sample",
                                      status=503)
        ctx.progress("found", current=n + 1, total=total, external_id=conv["id"])
        yield conv


def _tombstones(ctx: SyncCtx) -> list[dict[str, Any]]:
    """Conversations deleted at the provider since the cursor; each moves the cursor like a record."""
    f: SampleFilters = ctx.filters
    gone = data.deleted_conversations(_source(ctx), size=f.size, since=ctx.since(f.from_date), until=ctx.until)
    for tomb in gone:
        ctx.signal.raise_if_cancelled()
        ctx.advance_cursor(datetime.fromisoformat(tomb["deleted_at"]))
    return gone


def _customer(ctx: SyncCtx, person: dict[str, Any], updated_at: str) -> None:
    if person["company"]:
        ctx.ingest.company(external_id=f"company:{person['company']['domain']}", updated_at=updated_at,
                           domain=person["company"]["domain"], name=person["company"]["name"],
                           industry=person["company"]["industry"])
    ctx.ingest.contact(external_id=f"contact:{person['email']}", updated_at=updated_at, email=person["email"],
                       name=person["name"], company_domain=(person["company"] or {}).get("domain"))


def _sync_sessions(ctx: SyncCtx) -> None:
    for conv in _conversations(ctx):
        _customer(ctx, conv["customer"], conv["updated_at"])
        ctx.ingest.session(
            external_id=conv["id"], updated_at=conv["updated_at"], source="sample", name=conv["subject"],
            status=conv["status"], created_at=conv["created_at"],
            contact_email=conv["customer"]["email"], contact_name=conv["customer"]["name"],
            user_metadata={"email": conv["customer"]["email"], "name": conv["customer"]["name"]},
            custom_fields={"sample_revision": conv["revision"]},
            messages=[{"sender_type": "user" if m["from"] == "customer" else "human_agent",
                       "sender_name": m["author"], "content": m["body"], "created_at": m["at"]}
                      for m in conv["messages"]],
        )
    for tomb in _tombstones(ctx):
        ctx.ingest.delete("sessions", tomb["id"])


def _sync_contacts(ctx: SyncCtx) -> None:
    for conv in _conversations(ctx):
        _customer(ctx, conv["customer"], conv["updated_at"])


def _sync_companies(ctx: SyncCtx) -> None:
    for conv in _conversations(ctx):
        company = conv["customer"]["company"]
        if company is None:
            ctx.progress("skipped", external_id=conv["id"], message="customer uses a personal mail domain")
            continue
        ctx.ingest.company(external_id=f"company:{company['domain']}", updated_at=conv["updated_at"],
                           domain=company["domain"], name=company["name"], industry=company["industry"])


def _sync_issues(ctx: SyncCtx) -> None:
    for conv in _conversations(ctx):
        if conv["theme_type"] is None:
            ctx.progress("skipped", external_id=conv["id"], message="conversation raised no issue")
            continue
        ctx.ingest.issue(
            external_id=f"issue-{conv['id']}", updated_at=conv["updated_at"], name=conv["subject"],
            description=conv["messages"][0]["body"], type=conv["theme_type"],
            priority="high" if conv["theme_type"] == "bug" else "medium",
            session_external_id=conv["id"], custom_fields={"sample_conversation": conv["id"]},
        )
    for tomb in _tombstones(ctx):
        ctx.ingest.delete("issues", f"issue-{tomb['id']}")  # "missing" when the conversation raised none


def _spaces(ctx: ListCtx) -> list[StreamInstance]:
    return [StreamInstance(id=s, label=s.replace("-", " ").title(), metadata={"articles": len(a)})
            for s, a in data.ARTICLES.items()]


def _sync_knowledge(ctx: SyncCtx) -> None:
    space = ctx.instance_id or "help-center"
    if space not in data.ARTICLES:
        raise InputError(f"stream instance: unknown knowledge space {space!r}", field="instance_id")
    src = _source(ctx)
    since = ctx.since(ctx.filters.from_date)
    for art in data.articles(space, src.epoch, data.load_revisions(src.workspace)):
        ctx.signal.raise_if_cancelled()
        if since and datetime.fromisoformat(art["updated_at"]) < since:
            continue
        ctx.progress("found", external_id=art["id"])
        ctx.ingest.knowledge(external_id=art["id"], updated_at=art["updated_at"], type="docs_portal",
                             name=art["title"], url=art["url"], content=art["body"],
                             origin=ctx.settings.origin)


_polling: tuple[Frequency, ...] = ("manual", "1h", "6h", "24h")

plugin = define_plugin(
    id="sample",
    name="Sample data",
    description="Realistic sample support conversations, customers, issues and help articles. No account needed.",
    category="sessions",
    icon=Icon(inline_svg=LOGO),
    setup_label="Add sample workspace",
    docs_url="https://github.com/hissuno/hissuno-airflow/blob/main/docs/writing-a-plugin.md",
    base_urls={"API": "http://127.0.0.1/sample"},
    auth=ApiKeyAuth(
        fields=(
            Field(id="workspace", label="Workspace name", placeholder="demo",
                  help_text="Any name; each name is its own sample data set."),
            Field(id="every_seconds", label="New record every (seconds)", placeholder="3600",
                  pattern=r"^[0-9]*$"),
            Field(id="epoch", label="Data starts at", placeholder="ISO time; default 7 days ago",
                  pattern=r"^(\d{4}-\d{2}-\d{2}.*)?$"),
        ),
        test=_test,
    ),
    streams={
        "sessions": Stream(kind="sessions", label="Conversations",
                           description="Support conversations with their messages, customers and companies.",
                           sync=_sync_sessions, filters=SampleFilters, frequencies=_polling),
        "contacts": Stream(kind="contacts", label="Customers", description="People who wrote in.",
                           sync=_sync_contacts, filters=SampleFilters, frequencies=_polling),
        "companies": Stream(kind="companies", label="Companies", description="Customers' companies.",
                            sync=_sync_companies, filters=SampleFilters, frequencies=_polling),
        "issues": Stream(kind="issues", label="Issues", description="Bugs and requests raised in conversations.",
                         sync=_sync_issues, filters=SampleFilters, frequencies=_polling),
        "knowledge": Stream(kind="knowledge", label="Help articles", description="Articles of a knowledge space.",
                            sync=_sync_knowledge, instances=_spaces, filters=SampleFilters,
                            settings=KnowledgeSettings, frequencies=_polling),
    },
)
