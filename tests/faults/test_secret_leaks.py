"""Fault: a secret escapes. For every plugin in the registry, against its fake on 127.0.0.1: connect, sync
(through the Airflow ``SyncOperator``, and through the runtime with a progress listener), a forced token
refresh, webhooks (valid, replayed, forged, stale, unsigned, then the inbox drained), and failures (the
provider refusing every request, then failing every request, each time with an error body that quotes the
secret back). Then every place a secret could surface is scanned for every secret value in play:

- the log of everything (all loggers, debug lines of the integrations on);
- what the operator returns and pushes to XCom, and the exception text Airflow shows for a failed task;
- every progress event, and every ``SyncResult`` error;
- every text and JSON column of every table (``ingest_errors``, run errors, webhook events, settings ...);
- the API's answers (connections, plugin summaries, streams, runs, errors, events, catalog) and the page.

The secrets: every credential the connection holds (tokens, keys, refresh tokens), a recognisable
``SECRET-<plugin>-<random>`` webhook secret set on the connection, the OAuth apps' client secrets, the
GitHub App's private key and the server's own ``HISSUNO_SECRET_KEY``. Generalises the single-plugin checks
of ``tests/runtime/test_sync.py`` (a leaky plugin) and ``tests/test_cli_exit_codes_and_secrets.py``
(``sample`` and the CLI).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit import testing as conformance
from hissuno_airflow.kit.testing import ConformanceTarget
from hissuno_airflow.runtime.credentials import load_credentials
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store import connections as repo
from tests.fakes.server import FakeClock, FakeProvider
from tests.faults.providers import pace_zendesk
from tests.fixtures.airflow import ManualRun, RecordingTI
from tests.fixtures.fakes import retries_on
from tests.fixtures.store import connect_sample
from tests.fixtures.web import ADMIN_TOKEN
from tests.test_cli_exit_codes_and_secrets import _scan_store

TESTS = Path(__file__).resolve().parents[1]
PLUGINS = [p.id for p in registry.list_plugins()]
WEBHOOK_PLUGINS = [p.id for p in registry.list_plugins() if p.webhook_signature is not None]
SECRET_KEY = re.compile(r"token|secret|key|password|pat$|credential", re.IGNORECASE)
"""Credential keys whose values are secrets (``api_token``, ``refresh_token``, ``access_key_secret``, ``pat``)."""
NOT_SECRET_KEY = re.compile(r"(_type|_kind|_at|_url|_in|scopes?)$", re.IGNORECASE)
"""...but not what describes one (``token_type``, ``token_kind: internal``, ``expires_at``)."""
MIN_LEN = 8


@dataclass
class Leaks:
    """Everything a caller, a log reader or a database reader can see; scanned at the end."""

    texts: dict[str, list[str]] = field(default_factory=dict)

    def add(self, where: str, value: Any) -> None:
        self.texts.setdefault(where, []).append(value if isinstance(value, str) else repr(value))

    def found(self, needles: set[str]) -> list[str]:
        """``where: the line holding it`` for each secret found (the secret itself shortened)."""
        out = set()
        for where, texts in self.texts.items():
            for text in texts:
                for needle in needles:
                    for line in (ln for ln in text.splitlines() if needle in ln):
                        at = line.index(needle)
                        out.add(f"{where}: {needle[:6]}... in ...{line[max(0, at - 120):at]}<HERE>"
                                f"{line[at + len(needle):at + len(needle) + 60]}...")
        return sorted(out)


def _credential_secrets(creds: Any, key: str = "") -> Iterator[str]:
    if isinstance(creds, dict):
        for k, v in creds.items():
            yield from _credential_secrets(v, str(k))
    elif isinstance(creds, list):
        for v in creds:
            yield from _credential_secrets(v, key)
    elif isinstance(creds, str) and len(creds) >= MIN_LEN and SECRET_KEY.search(key) and not NOT_SECRET_KEY.search(key):
        yield creds


def _server_secrets() -> set[str]:
    """Secrets the server holds in its environment: client secrets, private keys, signing secrets."""
    out = set()
    for name, value in os.environ.items():
        if not re.search(r"SECRET|PRIVATE_KEY|SIGNING", name) or len(value) < MIN_LEN:
            continue
        if "-----BEGIN" in value:  # a PEM: its longest base64 line is what a leak would show
            out.add(max(value.splitlines(), key=len))
        else:
            out.add(value)
    return out


def _started_fakes(serve_fake: Any) -> tuple[Callable[[Any], Any], list[FakeProvider]]:
    started: list[FakeProvider] = []

    def serve(fake: Any) -> Any:
        started.append(fake)
        return serve_fake(fake)

    return serve, started


def _target(plugin_id: str, store: Any, monkeypatch: pytest.MonkeyPatch, serve: Any, tmp_path: Path,
            ) -> ConformanceTarget:
    if plugin_id == "sample":
        monkeypatch.setenv("HISSUNO_HOME", str(tmp_path))
        conn = connect_sample(store, "leaks", epoch="2026-01-01T00:00:00+00:00", every_seconds=600)
        return ConformanceTarget(conn.id, ("sessions", "issues"), {"sessions": {"size": 6}, "issues": {"size": 6}})
    module = importlib.import_module(f"tests.fakes.{plugin_id.replace('-', '_')}")
    return module.conformance(store, monkeypatch, serve)  # type: ignore[no-any-return]


def _operator_run(cid: str, stream: str, leaks: Leaks) -> None:
    """The stream through the Airflow operator: its return value, XCom pushes and any failure text."""
    from hissuno_airflow.operators.sync import SyncOperator

    ti = RecordingTI("hissuno__leaks")
    op = SyncOperator(task_id="sync", connection_id=cid, stream_id=stream, retries=0)
    context = {"ti": ti, "dag_run": ManualRun(run_id="manual__leaks"), "params": {}}
    try:
        leaks.add("operator return value", op.execute(context))  # type: ignore[arg-type]
    except Exception as exc:
        leaks.add("operator failure (the Airflow task's error)", f"{type(exc).__name__}: {exc}")
    leaks.add("XCom pushed by the operator", ti.pushed)


def _runtime_run(cid: str, stream: str, store: Any, leaks: Leaks) -> None:
    """The stream through the runtime, every progress event kept."""
    result = run_stream_sync(cid, stream, store=store,
                             on_progress=lambda ev, counts: leaks.add("progress events", ev.model_dump_json()))
    leaks.add("sync results", result.to_json())


def _api_and_page(store: Any, plugin_id: str, cid: str, leaks: Leaks) -> None:
    from hissuno_airflow.web.serve import build_app
    from tests.fixtures.web import RecordingDispatcher

    app = build_app(token=ADMIN_TOKEN, store=store, dispatcher=RecordingDispatcher())
    client = app.test_client()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    m = "/hissuno"
    for path in ("/", "/api/connections", "/api/plugins/catalog", f"/api/plugins/{plugin_id}",
                 f"/api/plugins/{plugin_id}/{cid}", f"/api/plugins/{plugin_id}/{cid}/streams",
                 f"/api/plugins/{plugin_id}/{cid}/runs", f"/api/plugins/{plugin_id}/{cid}/errors",
                 f"/api/plugins/{plugin_id}/{cid}/events", "/api/search?q=export"):
        r = client.get(m + path, headers=auth)
        assert r.status_code < 500, (path, r.status_code)
        leaks.add(f"API GET {path}", r.get_data(as_text=True))


def _add_log(leaks: Leaks, caplog: pytest.LogCaptureFixture) -> None:
    """The log as a deployment writes it: hissuno's own loggers down to debug (the integrations' debug
    switch is on), every other library from INFO, as Airflow's task log does by default. (httpcore's
    DEBUG trace prints raw response headers; it is not the product's to redact.)"""
    for record in caplog.records:
        if record.levelno >= logging.INFO or record.name.startswith("hissuno"):
            leaks.add(f"log ({record.name})", record.getMessage() + (f"\n{record.exc_text}" if record.exc_text else ""))


def _fail_everything(fakes: list[FakeProvider], status: int, quoted: set[str]) -> list[Any]:
    """Every fake answers ``status`` to everything, its body quoting the secrets back (as some APIs echo
    the token they refused)."""
    body = {"error": "invalid_token" if status == 401 else "unavailable",
            "message": "refused " + " ".join(sorted(quoted)), "token": sorted(quoted)}
    return [fake.inject("^/", status, times=None, json=body, headers={"X-Echo": sorted(quoted)[0]} if quoted else None)
            for fake in fakes]


@pytest.mark.parametrize("plugin_id", PLUGINS)
def test_connect_sync_refresh_and_failures_leak_no_secret(
    plugin_id: str, store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hissuno_airflow.runtime.services import ConnectionServices

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")
    clock = FakeClock()
    retries_on(monkeypatch, clock)  # the failure runs' retries wait on a fake clock
    if plugin_id == "zendesk":
        pace_zendesk(monkeypatch)  # the export's own pacing would sleep for real through the failure runs
    serve, fakes = _started_fakes(serve_fake)
    plugin = registry.get_plugin(plugin_id)
    leaks = Leaks()

    # connect (through the plugin's own flow against its fake), plus a recognisable webhook secret.
    target = _target(plugin_id, store, monkeypatch, serve, tmp_path)
    cid = target.connection_id
    webhook_secret = f"SECRET-{plugin_id}-{secrets.token_hex(12)}"
    repo.update_connection(store, cid, settings={"webhook_secret": webhook_secret})
    for sid in target.stream_ids:
        enable_stream(store, cid, sid, filters=dict(target.filters.get(sid, {})) or None)
    creds = load_credentials(store, repo.get_connection(store, cid))
    needles = set(_credential_secrets(creds)) | _server_secrets() | {webhook_secret, ADMIN_TOKEN}

    # sync: through the operator, then the runtime (an incremental run, progress events kept).
    for sid in target.stream_ids:
        _operator_run(cid, sid, leaks)
        _runtime_run(cid, sid, store, leaks)

    # refresh: a forced refresh (or an installation token minted again) for token-based plugins.
    services = ConnectionServices(plugin, store=store, connection=repo.get_connection(store, cid), label="refresh")
    try:
        refreshed = services.refresh(seen_token=creds.get("access_token"))
    except Exception as exc:
        leaks.add("refresh failure", f"{type(exc).__name__}: {exc}")
    else:
        needles |= set(_credential_secrets(refreshed))
    needles |= set(_credential_secrets(load_credentials(store, repo.get_connection(store, cid))))

    # failures: the provider refuses everything, then fails everything, quoting the secrets back.
    for status in (401, 503):
        faults = _fail_everything(fakes, status, needles)
        for sid in target.stream_ids:
            _operator_run(cid, sid, leaks)
            _runtime_run(cid, sid, store, leaks)
        for fake, fault in zip(fakes, faults, strict=True):
            fake.faults.remove(fault)
    if fakes:
        assert any(f.hits for f in faults), "the failure runs reached the provider"

    _api_and_page(store, plugin_id, cid, leaks)
    _add_log(leaks, caplog)

    needles = {n for n in needles if len(n) >= MIN_LEN}
    assert webhook_secret in needles and (plugin_id == "sample" or len(needles) >= 3), needles
    assert not leaks.found(needles), leaks.found(needles)
    assert _scan_store(store, sorted(needles)) == []


@pytest.mark.parametrize("plugin_id", WEBHOOK_PLUGINS)
def test_webhook_deliveries_and_their_inbox_leak_no_secret(
    plugin_id: str, store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from hissuno_airflow.runtime.webhooks.inbox import process_inbox
    from hissuno_airflow.web.serve import build_app
    from tests.fixtures.web import RecordingDispatcher

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")
    plugin = registry.get_plugin(plugin_id)
    module = importlib.import_module(f"tests.fakes.{plugin_id.replace('-', '_')}")
    target = module.webhook_target(store, monkeypatch, serve_fake)
    leaks = Leaks()
    needles = {s for s in (getattr(target.sign, "secret", None), getattr(target.forge, "secret", None)) if s}
    needles = {max(s.splitlines(), key=len) if "-----BEGIN" in s else s for s in needles} | _server_secrets()

    # valid, replayed, retried, forged, tampered, stale and unsigned deliveries through the runtime's intake.
    leaks.add("conformance summary", conformance.webhook_signature_enforced(plugin, store, target))
    # The forged and unsigned ones again over HTTP: what the provider (or an attacker) is answered.
    app = build_app(token=ADMIN_TOKEN, store=store, dispatcher=RecordingDispatcher())
    route = f"/hissuno/api/plugins/webhook/{plugin_id}" + (f"/{target.connection_id}" if target.connection_id else "")
    forged = target.forge(target.payload("evt-leak-forged"), url="http://localhost" + route, event_id="evt-leak-forged")
    for headers in (dict(forged.headers), {}):
        r = app.test_client().post(route, data=forged.body, headers={**headers, "Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, r.get_data(as_text=True)[:200]
        leaks.add(f"webhook answer {r.status_code}", r.get_data(as_text=True))
    # The inbox drained, for every stream of the connection.
    if target.connection_id:
        for stream in repo.list_streams(store, target.connection_id):
            leaks.add("inbox result", process_inbox(target.connection_id, stream.stream_id, store=store))
        _api_and_page(store, plugin_id, target.connection_id, leaks)
    _add_log(leaks, caplog)

    assert needles, "the webhook secret is known"
    assert not leaks.found(needles), leaks.found(needles)
    assert _scan_store(store, sorted(needles)) == []
