"""The conformance suite over every registered plugin, plus proof that each check can fail.

Every plugin in ``registry.list_plugins()`` is a parameter, so a new plugin is checked the moment it is
registered. Definition and catalog checks need nothing. The store checks (ingest, idempotent resync,
cursor only on success) need a reachable provider, which ``sample`` has built in. Any other plugin
provides one through its fake:

    ``tests/fakes/<module>.py`` (``<module>`` is the plugin id with ``-`` as ``_``) defines::

        def conformance(store, monkeypatch, serve_fake) -> ConformanceTarget: ...

    It starts the provider fake on 127.0.0.1 with ``serve_fake(FakeX())``, points the plugin at it
    with ``monkeypatch.setenv("HISSUNO_<ID>_API_URL", fake.url)`` (and any other base it declares),
    creates a connection (preferably through the plugin's real connect flow against the fake), seeds
    the fake with at least one record per stream, and returns
    ``ConformanceTarget(connection_id=..., stream_ids=(...), filters={...})`` from
    ``hissuno_airflow.kit.testing``. Everything it starts must stop through those fixtures.

    For the auth and webhook checks the same module may define::

        def auth_target(store, monkeypatch, serve_fake) -> AuthTarget: ...
        def webhook_target(store, monkeypatch, serve_fake) -> WebhookTarget: ...

    ``auth_target`` starts the fake and returns credentials it accepts and credentials it refuses.
    ``webhook_target`` creates a connection whose ``webhook_secret`` (or the app's environment variable)
    is the signer's secret and returns ``WebhookTarget(sign=Signer(plugin.webhook_signature, ...),
    forge=signer.forged(), connection_id=...)`` with the signers of ``tests.fakes.webhooks``.

A plugin without such a fake must have its own ``tests/plugins/test_<module>.py``; its store checks are
then skipped here, and ``test_every_plugin_has_a_fake_or_its_own_tests`` fails when it has neither.
The test plugins of ``tests/web/plugins.py`` (``webkey``, ``webauth`` and one ``wh-<scheme>`` per
signature scheme) go through the auth and webhook checks below, with their fakes.
"""

from __future__ import annotations

import importlib
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit import (
    ApiKeyAuth,
    AuthResult,
    Field,
    Icon,
    PluginDef,
    Stream,
    StreamInstance,
    SyncCtx,
    define_plugin,
)
from hissuno_airflow.kit import signatures as sig
from hissuno_airflow.kit import testing as conformance
from hissuno_airflow.kit.testing import AuthTarget, ConformanceError, ConformanceTarget, WebhookTarget
from hissuno_airflow.plugins import builtin_plugins
from hissuno_airflow.runtime.credentials import credential_store
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.store import connections as repo
from tests.fakes.webhooks import Signer, keys_for
from tests.fixtures.store import connect_sample
from tests.fixtures.web import register_test_plugins, signer

TESTS = Path(__file__).resolve().parents[1]
PLUGIN_IDS = [p.id for p in registry.list_plugins()]
SAMPLE_STREAMS = ("sessions", "contacts", "companies", "issues", "knowledge:help-center")


def _module_name(plugin_id: str) -> str:
    return plugin_id.replace("-", "_")


def _manifest_module(plugin_id: str) -> str:
    if plugin_id in builtin_plugins():
        return builtin_plugins()[plugin_id]
    source = registry.plugin_source(plugin_id)
    # "entry point <name>=<module>:<attr>"
    return source.rsplit("=", 1)[-1].split(":", 1)[0]


@pytest.mark.parametrize("plugin_id", PLUGIN_IDS)
def test_definition_is_valid(plugin_id: str) -> None:
    conformance.definition_valid(registry.get_plugin(plugin_id))


@pytest.mark.parametrize("plugin_id", PLUGIN_IDS)
def test_catalog_card_has_no_functions_or_secrets(plugin_id: str) -> None:
    card = conformance.catalog_has_no_functions_or_secrets(registry.get_plugin(plugin_id))
    assert card["id"] == plugin_id


@pytest.mark.parametrize("plugin_id", PLUGIN_IDS)
def test_manifest_import_is_light(plugin_id: str) -> None:
    conformance.import_is_light(_manifest_module(plugin_id))


@pytest.fixture
def target(request: pytest.FixtureRequest, store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any,
           tmp_path: Path) -> ConformanceTarget:
    """A connection of the parametrized plugin, with its provider reachable and streams enabled."""
    plugin_id: str = request.param
    if plugin_id == "sample":
        # The sample "provider" keeps its edits under HISSUNO_HOME; isolate them per test.
        monkeypatch.setenv("HISSUNO_HOME", str(tmp_path))
        conn = connect_sample(store, f"ws-{uuid.uuid4().hex[:8]}", epoch="2026-01-01T00:00:00+00:00",
                              every_seconds=600)
        tgt = ConformanceTarget(conn.id, SAMPLE_STREAMS, {sid: {"size": 12} for sid in SAMPLE_STREAMS})
    else:
        module = _module_name(plugin_id)
        # A shipped provider is real only against its fake: missing one fails, it is never skipped.
        assert (TESTS / "fakes" / f"{module}.py").exists(), f"{plugin_id}: write tests/fakes/{module}.py"
        factory = getattr(importlib.import_module(f"tests.fakes.{module}"), "conformance", None)
        assert callable(factory), f"tests/fakes/{module}.py must define conformance(store, monkeypatch, serve_fake)"
        tgt = factory(store, monkeypatch, serve_fake)
        assert isinstance(tgt, ConformanceTarget) and tgt.stream_ids
    for sid in tgt.stream_ids:
        enable_stream(store, tgt.connection_id, sid, filters=dict(tgt.filters.get(sid, {})) or None)
    return tgt


@pytest.mark.parametrize("target", PLUGIN_IDS, indirect=True)
def test_streams_ingest_records(store: Any, target: ConformanceTarget) -> None:
    plugin = registry.get_plugin(repo.get_connection(store, target.connection_id).plugin_id)
    for sid in target.stream_ids:
        result = conformance.stream_ingests_records(plugin, store, target.connection_id, sid)
        assert result.counts["synced"] > 0


@pytest.mark.parametrize("target", PLUGIN_IDS, indirect=True)
def test_resync_is_idempotent(store: Any, target: ConformanceTarget) -> None:
    plugin = registry.get_plugin(repo.get_connection(store, target.connection_id).plugin_id)
    for sid in target.stream_ids:
        conformance.resync_is_idempotent(plugin, store, target.connection_id, sid)


@pytest.mark.parametrize("target", PLUGIN_IDS, indirect=True)
def test_cursor_moves_only_on_success(store: Any, target: ConformanceTarget) -> None:
    plugin = registry.get_plugin(repo.get_connection(store, target.connection_id).plugin_id)
    for sid in target.stream_ids:
        conformance.cursor_moves_only_on_success(plugin, store, target.connection_id, sid)


def _from_fake(plugin_id: str, factory_name: str, *args: Any) -> Any:
    module = _module_name(plugin_id)
    assert (TESTS / "fakes" / f"{module}.py").exists(), f"{plugin_id}: write tests/fakes/{module}.py"
    factory = getattr(importlib.import_module(f"tests.fakes.{module}"), factory_name, None)
    assert callable(factory), f"tests/fakes/{module}.py must define {factory_name}(store, monkeypatch, serve_fake)"
    return factory(*args)


@pytest.mark.parametrize("plugin_id", PLUGIN_IDS)
def test_auth_test_accepts_good_and_refuses_bad_credentials(
    plugin_id: str, store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any
) -> None:
    plugin = registry.get_plugin(plugin_id)
    if plugin_id == "sample":
        target = AuthTarget(good={"workspace": "conformance"}, bad={"workspace": "not a name!"})
    else:
        target = _from_fake(plugin_id, "auth_target", store, monkeypatch, serve_fake)
    conformance.auth_test_rejects_bad_credentials(plugin, store, target)


WEBHOOK_PLUGIN_IDS = [p.id for p in registry.list_plugins() if p.webhook_signature is not None]


# Declared only when a shipped plugin takes webhooks (today only ``sample`` ships, without any), so the
# suite never counts a skipped test; the self-tests below exercise the check on test plugins meanwhile.
if WEBHOOK_PLUGIN_IDS:

    @pytest.mark.parametrize("plugin_id", WEBHOOK_PLUGIN_IDS)
    def test_webhook_signature_is_enforced(plugin_id: str, store: Any, monkeypatch: pytest.MonkeyPatch,
                                           serve_fake: Any) -> None:
        plugin = registry.get_plugin(plugin_id)
        target = _from_fake(plugin_id, "webhook_target", store, monkeypatch, serve_fake)
        conformance.webhook_signature_enforced(plugin, store, target)


# -- the test plugins of tests/web/plugins.py ------------------------------------------------------


def _connection(store: Any, plugin_id: str, settings: dict[str, Any] | None, account: str = "acct-1") -> str:
    row, _ = repo.upsert_connection(store, project_id="00000000-0000-0000-0000-000000000001", plugin_id=plugin_id,
                                    external_account_id=account, account_label=account, settings=settings or {})
    credential_store(store, "db").save(row, {"api_key": "k-" + account})
    return row.id


def _scheme_names() -> list[str]:
    from tests.web.plugins import SCHEMES

    return sorted(SCHEMES)


@pytest.mark.parametrize("name", _scheme_names())
def test_webhook_check_passes_for_every_signature_scheme(store: Any, name: str) -> None:
    register_test_plugins()
    plugin = registry.get_plugin(f"wh-{name.replace('_', '-')}")
    provider = signer(name)
    cid = _connection(store, plugin.id, {"webhook_secret": provider.secret})
    done = conformance.webhook_signature_enforced(plugin, store, WebhookTarget(provider, provider.forged(), cid))
    assert done["valid"] == "stored 1" and done["forged"] == "refused"
    assert (done["stale"] == "refused") == conformance.has_freshness_window(plugin.webhook_signature)


def test_webhook_check_on_the_static_route(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    register_test_plugins()
    plugin = registry.get_plugin("webkey")
    provider = Signer(plugin.webhook_signature, keys_for(plugin.webhook_signature, "static-secret-123"))
    monkeypatch.setenv("WEBKEY_WEBHOOK_SECRET", provider.secret)
    cid = _connection(store, "webkey", None, account="team-7")
    enable_stream(store, cid, "events")
    target = WebhookTarget(provider, provider.forged(), payload=lambda eid: {"team_id": "team-7", "id": eid})
    assert conformance.webhook_signature_enforced(plugin, store, target)["replay"] == "not stored twice"


def test_auth_check_passes_for_the_api_key_test_plugin(store: Any, serve_fake: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.web.plugins import FakeKeyProvider

    register_test_plugins()
    fake = serve_fake(FakeKeyProvider())
    fake.add_account("good-key-1", "acct-1", "Account One")
    monkeypatch.setenv("HISSUNO_WEBKEY_API_URL", fake.url)
    cid = conformance.auth_test_rejects_bad_credentials(
        registry.get_plugin("webkey"), store, AuthTarget(good={"api_key": "good-key-1"}, bad={"api_key": "wrong-key-9"}))
    assert repo.get_connection(store, cid).account_label == "Account One"
    # bad, good, the same account again unnamed (refused after its test), and again naming the connection
    assert fake.count("/me") == 4


def test_auth_check_passes_for_the_oauth_test_plugin(store: Any, serve_fake: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.web.plugins import FakeAuthServer

    register_test_plugins()
    fake = serve_fake(FakeAuthServer())
    monkeypatch.setenv("HISSUNO_WEBAUTH_API_URL", fake.url)
    good = fake.seed_tokens()
    revoked = fake.seed_tokens()
    fake.revoke_token(revoked["access_token"])
    account = conformance.auth_test_rejects_bad_credentials(
        registry.get_plugin("webauth"), store, AuthTarget(good=good, bad=revoked))
    assert account == "org-42"


def _plugins_without_tests() -> list[str]:
    return [
        p.id for p in registry.list_plugins()
        # Shipped plugins only: test modules register throwaway plugins at run time.
        if p.id != "sample" and registry.plugin_source(p.id).startswith(("built-in", "entry point"))
        and not (TESTS / "fakes" / f"{_module_name(p.id)}.py").exists()
        and not (TESTS / "plugins" / f"test_{_module_name(p.id)}.py").exists()
    ]


def test_every_plugin_has_a_fake_or_its_own_tests() -> None:
    missing = _plugins_without_tests()
    assert not missing, (
        f"plugins without tests/fakes/<id>.py or tests/plugins/test_<id>.py: {', '.join(missing)}"
    )


# -- the checks themselves can fail --------------------------------------------------------------


def _plugin(pid: str, sync: Any, *, fields: tuple[Field, ...] = (), **extra: Any) -> PluginDef:
    return define_plugin(
        id=pid, name=pid.title(), description="conformance self-test", category="issues", icon=Icon(),
        auth=ApiKeyAuth(fields=fields, test=lambda c, x: AuthResult(external_account_id="a", account_label="A")),
        streams={"items": Stream(kind="issues", label="Items", sync=sync)}, **extra,
    )


@pytest.fixture
def register_plugin(store: Any):
    """Register a plugin for one test and connect an account of it; yields ``(plugin) -> connection id``."""
    registered: list[str] = []

    def add(plugin: PluginDef) -> str:
        registry.register(plugin)
        registered.append(plugin.id)
        row, _ = repo.upsert_connection(store, project_id="00000000-0000-0000-0000-000000000001",
                                        plugin_id=plugin.id, external_account_id="a", account_label="A",
                                        settings=None)
        credential_store(store, "db").save(row, {})
        return row.id

    yield add
    for pid in registered:
        registry.unregister(pid)


def test_meta_check_notices_a_plugin_without_tests() -> None:
    # As if an installed package declared it in the hissuno.plugins entry-point group.
    registry.register(_plugin("selftest-orphan", lambda ctx: None), "entry point selftest-orphan=somepkg:plugin")
    try:
        assert "selftest-orphan" in _plugins_without_tests()
    finally:
        registry.unregister("selftest-orphan")
    assert "selftest-orphan" not in _plugins_without_tests()


def test_definition_check_names_every_broken_promise() -> None:
    def two_args(ctx: SyncCtx, extra: int) -> None: ...

    bad = _plugin("selftest-def", two_args, fields=(Field(id="api_token", label="Token"),),
                  base_urls={"API": "api.example.com"})
    with pytest.raises(ConformanceError) as ei:
        conformance.definition_valid(bad)
    text = str(ei.value)
    assert "streams.items.sync: the runtime calls it with 1 argument(s)" in text
    assert "auth.fields.api_token: the name says it is a secret; expected secret=True" in text
    assert "base_urls.API: expected an absolute http(s) URL; got 'api.example.com'" in text


def test_definition_check_reruns_define_plugin_on_hand_built_definitions() -> None:
    good = _plugin("selftest-hand", lambda ctx: None)
    smuggled = PluginDef.model_construct(**{**dict(good), "id": "Not An Id"})
    with pytest.raises(ConformanceError, match="id: expected lowercase letter"):
        conformance.definition_valid(smuggled)


def test_catalog_scan_finds_functions_secret_values_and_known_secrets() -> None:
    card = {"id": "x", "auth": {"fields": [{"id": "token", "secret": True}], "api_key": "sk-live-123"},
            "hook": lambda: None, "notes": "uses app-secret-value-42"}
    problems = conformance.find_functions_and_secrets(card, ("app-secret-value-42",))
    assert "hook: holds a function, not JSON data" in problems
    assert "auth.api_key: sensitive key holds a value" in problems
    assert "a configured secret value appears in the view" in problems
    assert not any("secret" in p and "fields" in p for p in problems), "a secret=True flag is not a leak"
    assert conformance.find_functions_and_secrets({"id": "x", "secret": False, "token": None}) == []


def test_import_check_catches_a_heavy_manifest() -> None:
    conformance.import_is_light("hissuno_airflow.kit")
    with pytest.raises(ConformanceError, match="importing it loads psycopg"):
        conformance.import_is_light("hissuno_airflow.store.db")


def _restless_sync(ctx: SyncCtx) -> None:
    # The description changes on every run, as if the plugin stored a fetch time in the record.
    for i in range(3):
        ctx.ingest.issue(external_id=f"i{i}", name=f"Issue {i}", description=f"seen at {time.time_ns()}",
                         updated_at="2026-02-01T00:00:00+00:00")


def test_idempotency_check_catches_a_plugin_that_rewrites_every_run(store: Any, register_plugin: Any) -> None:
    cid = register_plugin(_plugin("selftest-restless", _restless_sync))
    plugin = registry.get_plugin("selftest-restless")
    conformance.stream_ingests_records(plugin, store, cid, "items", min_records=3)
    with pytest.raises(ConformanceError) as ei:
        conformance.resync_is_idempotent(plugin, store, cid, "items")
    assert "full resync: issues/i0: entity or its synced record was rewritten" in str(ei.value)


def _empty_sync(ctx: SyncCtx) -> None:
    ctx.progress("found", message="nothing here")


def test_store_checks_refuse_a_stream_that_ingests_nothing(store: Any, register_plugin: Any) -> None:
    cid = register_plugin(_plugin("selftest-empty", _empty_sync))
    plugin = registry.get_plugin("selftest-empty")
    with pytest.raises(ConformanceError, match="expected at least 1 synced record"):
        conformance.stream_ingests_records(plugin, store, cid, "items")
    with pytest.raises(ConformanceError, match="idempotency cannot be shown"):
        conformance.resync_is_idempotent(plugin, store, cid, "items")
    with pytest.raises(ConformanceError, match="the cursor has nothing to guard"):
        conformance.cursor_moves_only_on_success(plugin, store, cid, "items")


def test_cursor_check_catches_a_runtime_that_commits_failed_runs(
    store: Any, register_plugin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hissuno_airflow.store import runs

    real_finish = runs.finish_run

    def careless_finish(conn, *, cursor_after, write_cursor, **kw):
        # The fault under test: a runtime that writes the high-water mark whatever the outcome.
        real_finish(conn, cursor_after=cursor_after or datetime(2030, 1, 1, tzinfo=UTC), write_cursor=True, **kw)

    def dated_sync(ctx: SyncCtx) -> None:
        ctx.ingest.issue(external_id="i1", name="Issue 1", updated_at="2026-02-01T00:00:00+00:00")

    cid = register_plugin(_plugin("selftest-cursor", dated_sync))
    plugin = registry.get_plugin("selftest-cursor")
    conformance.cursor_moves_only_on_success(plugin, store, cid, "items")
    monkeypatch.setattr(runs, "finish_run", careless_finish)
    with pytest.raises(ConformanceError, match="an interrupted run moved the cursor"):
        conformance.cursor_moves_only_on_success(plugin, store, cid, "items")


def _hook_plugin(pid: str, scheme: Any) -> PluginDef:
    return define_plugin(
        id=pid, name=pid.title(), description="conformance self-test", category="issues", icon=Icon(),
        auth=ApiKeyAuth(fields=(), test=lambda c, x: AuthResult(external_account_id="a", account_label="A")),
        webhook_signature=scheme,
        streams={"events": Stream(kind="issues", label="Events", webhook=lambda ctx: None)},
    )


def test_webhook_check_catches_a_runtime_that_skips_verification(
    store: Any, register_plugin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hissuno_airflow.runtime.webhooks import intake

    scheme = sig.GitHubSignature()
    provider = Signer(scheme)
    cid = register_plugin(_hook_plugin("selftest-lax", scheme))
    repo.update_connection(store, cid, settings={"webhook_secret": provider.secret})
    plugin = registry.get_plugin("selftest-lax")
    conformance.webhook_signature_enforced(plugin, store, WebhookTarget(provider, provider.forged(), cid))
    # The fault under test: an intake that trusts every request.
    monkeypatch.setattr(intake, "verify", lambda *a, **k: sig.Verified(event_id=None, timestamp=None))
    with pytest.raises(ConformanceError) as ei:
        conformance.webhook_signature_enforced(plugin, store, WebhookTarget(provider, provider.forged(), cid))
    text = str(ei.value)
    assert "forged: accepted" in text and "tampered: accepted" in text and "unsigned: accepted" in text


def test_webhook_check_catches_retries_stored_twice_and_a_wrong_signer(store: Any, register_plugin: Any) -> None:
    # Linear's timestamp lives in the body, so without a delivery-id header each retry looks new.
    scheme = sig.LinearSignature(event_id_header=None)
    provider = Signer(scheme)
    cid = register_plugin(_hook_plugin("selftest-retry", scheme))
    repo.update_connection(store, cid, settings={"webhook_secret": provider.secret})
    plugin = registry.get_plugin("selftest-retry")
    with pytest.raises(ConformanceError, match="retry: the same event was stored twice"):
        conformance.webhook_signature_enforced(plugin, store, WebhookTarget(provider, provider.forged(), cid))
    wrong = provider.with_secret("not-the-configured-secret")
    with pytest.raises(ConformanceError, match="valid delivery: refused"):
        conformance.webhook_signature_enforced(plugin, store, WebhookTarget(wrong, provider.forged(), cid))


def test_auth_check_catches_lenient_and_unclear_tests(store: Any) -> None:
    def lenient(creds: dict[str, Any], ctx: Any) -> AuthResult:
        return AuthResult(external_account_id="a", account_label="A")

    def mute(creds: dict[str, Any], ctx: Any) -> AuthResult:
        if creds["token"] != "good-token":
            raise RuntimeError  # no message: the user learns nothing
        return AuthResult(external_account_id="a", account_label="A")

    fields = (Field(id="token", label="Token", secret=True, required=True),)
    target = AuthTarget(good={"token": "good-token"}, bad={"token": "bad-token"})
    for pid, fn, expected in (("selftest-lenient", lenient, "bad credentials were accepted"),
                              ("selftest-mute", mute, "refusal carries no message")):
        plugin = define_plugin(id=pid, name=pid, description="x", category="issues", icon=Icon(),
                               auth=ApiKeyAuth(fields=fields, test=fn),
                               streams={"items": Stream(kind="issues", label="Items", sync=lambda ctx: None)})
        registry.register(plugin)
        try:
            with pytest.raises(ConformanceError, match=expected):
                conformance.auth_test_rejects_bad_credentials(plugin, store, target)
        finally:
            registry.unregister(pid)


def test_auth_check_wants_a_hissuno_error_from_on_token_exchanged(store: Any) -> None:
    from hissuno_airflow.kit import OAuth2Auth

    def exchanged(tokens: Any, ctx: Any) -> AuthResult:
        if tokens.access_token != "good":
            raise KeyError("account")  # reaches the user as internal_error
        return AuthResult(external_account_id="a", account_label="A")

    plugin = define_plugin(
        id="selftest-oauth", name="x", description="x", category="issues", icon=Icon(),
        auth=OAuth2Auth(authorize_url="https://a.invalid/authorize", token_url="https://a.invalid/token",
                        client_id_env="X_ID", client_secret_env="X_SECRET", on_token_exchanged=exchanged),
        streams={"items": Stream(kind="issues", label="Items", sync=lambda ctx: None)})
    with pytest.raises(ConformanceError, match="bad token raised KeyError, not a hissuno error"):
        conformance.auth_test_rejects_bad_credentials(
            plugin, store, AuthTarget(good={"access_token": "good"}, bad={"access_token": "bad"}))


def test_webhook_check_takes_named_instance_streams(store: Any, register_plugin: Any) -> None:
    # Webhook handlers on a parameterized stream (one per team): the target names the instance to enable.
    scheme = sig.LinearSignature()
    provider = Signer(scheme)
    plugin = define_plugin(
        id="selftest-teams", name="Teams", description="conformance self-test", category="issues", icon=Icon(),
        auth=ApiKeyAuth(fields=(), test=lambda c, x: AuthResult(external_account_id="a", account_label="A")),
        webhook_signature=scheme,
        streams={"issues": Stream(kind="issues", label="Issues", webhook=lambda ctx: None,
                                  instances=lambda ctx: [StreamInstance(id="team-1", label="Team 1")])},
    )
    cid = register_plugin(plugin)
    repo.update_connection(store, cid, settings={"webhook_secret": provider.secret})
    with pytest.raises(ConformanceError, match="names no instance stream"):
        conformance.webhook_signature_enforced(plugin, store, WebhookTarget(provider, provider.forged(), cid))
    with pytest.raises(ConformanceError, match="'events:x' is not a stream with a webhook handler"):
        conformance.webhook_signature_enforced(plugin, store, WebhookTarget(provider, provider.forged(), cid,
                                                                            stream_ids=("events:x",)))
    done = conformance.webhook_signature_enforced(plugin, store, WebhookTarget(provider, provider.forged(), cid,
                                                                               stream_ids=("issues:team-1",)))
    assert done["valid"] == "stored 1"
    assert [s.stream_id for s in repo.list_streams(store, cid)] == ["issues:team-1"]


def test_auth_check_covers_a_custom_connects_token_path(store: Any) -> None:
    """``custom``: the bodies go through ``connect_custom``; a plugin taking any token fails the check."""
    register_test_plugins()
    plugin = registry.get_plugin("webcustom")  # connects whatever token it is given
    with pytest.raises(ConformanceError, match="bad credentials were accepted"):
        conformance.auth_test_rejects_bad_credentials(plugin, store, AuthTarget(good={"token": "good-1"},
                                                                                bad={"token": "bad-1"}))
