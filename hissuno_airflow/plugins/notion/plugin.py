"""The ``notion`` plugin: database rows as issues and page trees as knowledge, by sync and by webhook."""

from __future__ import annotations

from hissuno_airflow.kit import CustomAuth, Field, Icon, Stream, define_plugin
from hissuno_airflow.kit.signatures import NotionSignature

from . import auth, handlers
from .streams import (
    IssuesSettings,
    KnowledgeSettings,
    database_instances,
    on_event,
    page_instances,
    sync_issues,
    sync_knowledge,
)

WEBHOOK_TOLERANCE = 30 * 60
"""Deliveries whose signed ``timestamp`` is further than 30 minutes from now are refused as stale (a
replay); Notion's events are signals only, so a late retry refused here is caught by the next sync."""

plugin = define_plugin(
    id="notion",
    name="Notion",
    description="Sync Notion databases as issues and pages as knowledge.",
    category="knowledge",
    icon=Icon(),
    multi_instance=True,
    base_urls={"API": "https://api.notion.com/v1", "AUTH": "https://api.notion.com/v1"},
    # OAuth (public integration, NOTION_CLIENT_ID/SECRET) when the form is left empty; an internal
    # integration token when it is filled. Custom, because Notion's token exchange takes a JSON body.
    auth=CustomAuth(
        fields=(Field(id="access_token", label="Internal integration token (leave empty for OAuth)", secret=True,
                      placeholder="ntn_...", pattern=r"^(ntn_|secret_)\S+$",
                      help_text="notion.so/profile/integrations -> your internal integration -> Internal "
                                "integration secret; share the pages and databases with it"),),
        connect=auth.connect,
        callback=auth.callback,
    ),
    # Signed with the verification token Notion posts (unsigned) when the subscription is created; the
    # intake keeps it as the connection's webhook_secret (see docs/plugins/notion.md).
    webhook_signature=NotionSignature(timestamp_field="timestamp", timestamp_format="iso",
                                      tolerance_seconds=WEBHOOK_TOLERANCE),
    # Notion allows about three requests a second per integration, with short bursts.
    rate_limit_per_minute=180,
    rate_limit_burst=3,
    custom_handlers={"databases": handlers.databases, "databaseSchema": handlers.database_schema,
                     "pages": handlers.pages, "childPages": handlers.child_pages,
                     "webhookVerification": handlers.webhook_verification},
    connection_handlers=frozenset({"databases", "databaseSchema", "pages", "childPages", "webhookVerification"}),
    streams={
        "issues": Stream(kind="issues", label="Database rows",
                         description="Rows from a Notion database mapped to Hissuno issues.",
                         sync=sync_issues, webhook=on_event, instances=database_instances,
                         settings=IssuesSettings),
        "knowledge": Stream(kind="knowledge", label="Pages",
                            description="Notion pages imported as knowledge sources.",
                            sync=sync_knowledge, webhook=on_event, instances=page_instances,
                            settings=KnowledgeSettings),
    },
)
