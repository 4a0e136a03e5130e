"""``afprobe``: a tiny credential-checking test plugin whose provider data lives in a JSON file.

Records are ``{"id", "updated_at"}``; the test edits the file to make new records appear. The sync
honours ``ctx.since()`` and ``ctx.until`` the way real plugins do.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from hissuno_airflow.kit import define_plugin
from hissuno_airflow.kit.auth import ApiKeyAuth, AuthResult, Field
from hissuno_airflow.kit.errors import ProviderAuthError
from hissuno_airflow.kit.streams import Stream

GOOD_KEY = "probe-key-0123456789"


def data_file() -> Path:
    return Path(os.environ["HISSUNO_HOME"]) / "afprobe.json"


def write_records(records: list[tuple[str, datetime]]) -> None:
    data_file().write_text(json.dumps([{"id": i, "updated_at": t.isoformat()} for i, t in records]))


def _test(credentials: dict[str, Any], ctx: Any) -> AuthResult:
    if credentials.get("api_key") != GOOD_KEY:
        raise ProviderAuthError("afprobe GET /me: 401 Unauthorized", provider="afprobe", status=401)
    return AuthResult(external_account_id="acct-1", account_label="Probe Workspace")


def _sync(ctx: Any) -> None:
    if ctx.credentials.get("api_key") != GOOD_KEY:
        raise ProviderAuthError("afprobe GET /items: 401 Unauthorized", provider="afprobe", status=401)
    since, until = ctx.since(), ctx.until
    for raw in json.loads(data_file().read_text()):
        ts = datetime.fromisoformat(raw["updated_at"])
        if (since is not None and ts <= since) or (until is not None and ts >= until):
            continue
        if raw["id"] == "wait":
            # A slow provider: block until the run is cancelled (or give up after 30 s).
            ctx.signal.wait(30)
            ctx.signal.raise_if_cancelled()
        ctx.ingest.contact(external_id=raw["id"], updated_at=ts, email=f"{raw['id']}@probe.test",
                           name=f"Probe {raw['id']}")


plugin = define_plugin(
    id="afprobe",
    name="Airflow Probe",
    description="Test plugin for the Airflow layer.",
    category="customer_data",
    icon={"src": "/x.svg"},
    auth=ApiKeyAuth(fields=(Field(id="api_key", label="API key", secret=True, required=True),
                            Field(id="workspace", label="Workspace")), test=_test),
    streams={"people": Stream(kind="contacts", label="People", description="Probe people.", sync=_sync)},
)
