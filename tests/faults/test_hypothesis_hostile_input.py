"""Fault: malformed, oversized and hostile input, at every public route, every plugin's connect, and a
plugin that cannot even be imported.

``tests/web/test_hostile_input.py`` sends NUL characters, lone surrogates, deep nesting and oversized
identifiers. This adds what it leaves out, over every rule of the app's ``url_map`` under the mount (so a
route added later, in any blueprint, is covered without touching this file): JSON that does not parse,
JSON of the wrong shape, fields of the wrong type, a body over the size limit, bodies in other content
types, and junk in paging and filter query parameters. Then bad connection fields at the connect of every
plugin in the registry, generated from its auth schema; and a plugin module that raises at import.

Everywhere: no 5xx, no stack trace in what the caller sees, an error is JSON naming what was wrong, and
nothing is written.
"""

from __future__ import annotations

import io
import json
import re
import sys
import textwrap
from collections.abc import Iterator
from contextlib import redirect_stdout
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hissuno_airflow import registry
from hissuno_airflow.kit.auth import ApiKeyAuth, CustomAuth, Field, GitHubAppAuth, OAuth2Auth
from tests.fakes.github_app import new_private_key
from tests.fakes.server import FakeProvider, FakeRequest, Reply, route
from tests.fixtures.web import ADMIN_TOKEN
from tests.web import test_hostile_input as hostile

MOUNT = hostile.MOUNT
site = hostile.site  # the app over a store with a sample, a webkey and a webcustom connection
AUTHED = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TRACE = re.compile(r"Traceback|File \"|line \d+, in |\w+Error: .*\n\s+at ")


def public_routes(app: Any) -> list[tuple[str, str]]:
    """Every (rule, method) the app serves under the mount, from any blueprint; static files aside."""
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(MOUNT) or rule.endpoint.endswith("static"):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule.rule, method))
    return sorted(out)


def _path(rule: str, plugin: str, site: hostile.Site) -> str:
    for arg in re.findall(r"<(?:[a-z]+:)?([a-z_]+)>", rule):
        value = hostile._valid(arg, plugin, site)
        rule = re.sub(rf"<(?:[a-z]+:)?{arg}>", quote(value, safe=""), rule)
    return rule


def _check(response: Any, what: str) -> None:
    """No 5xx, no stack trace; an error is a JSON object naming its code."""
    text = response.get_data(as_text=True)
    assert response.status_code < 500, f"{what} -> {response.status_code} {text[:300]}"
    assert not TRACE.search(text), f"{what}: a stack trace reached the caller: {text[:300]}"
    if response.status_code >= 400:
        body = response.get_json(silent=True)
        assert isinstance(body, dict) and body.get("error"), f"{what} -> {response.status_code} {text[:300]}"


# -- malformed payloads at every route -----------------------------------------------------------------

UNPARSABLE = [
    b"{", b'{"a":}', b"[1,]", b"{'name': 'x'}", b'{"a": 1}{"b": 2}', b"\xff\xfe\xfd", b"\x00", b"nul",
    b'{"n": ' + b"9" * 5000 + b"}",  # past Python's int-parsing digit limit: a ValueError, not a number
    b'{"n": 1e999}', b'{"n": -Infinity}', b'{"name": "\\ud800"}', b"\xef\xbb\xbf{}", b'"\\u0000"',
]
WRONG_SHAPE = [b"[]", b'"x"', b"1", b"null", b"true", b"[{}]", b'[{"name": "x"}]']
# Field -> values of a type the field never has (None is left out: "not given" is valid for many).
_NOT_A_MAP = st.one_of(st.text(max_size=5), st.integers(), st.lists(st.integers(), max_size=3), st.booleans())
_NOT_TEXT = st.one_of(st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=False),
                      st.lists(st.text(max_size=3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                 max_size=2), st.booleans())
WRONG_TYPES: dict[str, Any] = {
    **{k: _NOT_A_MAP for k in ("credentials", "settings", "filters")},
    **{k: _NOT_TEXT for k in ("name", "account_label", "stream_key", "instance_id", "stream_id", "streamId",
                              "connection_id", "connectionId", "project_id", "projectId", "frequency", "mode",
                              "lane", "status", "q")},
    "enabled": st.one_of(st.text(max_size=5), st.integers(2, 10**6), st.lists(st.booleans(), max_size=2)),
    "ids": st.one_of(st.text(max_size=5), st.integers(), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                          max_size=2), st.just([{}]), st.just([None])),
    "limit": st.one_of(st.text(max_size=5), st.floats(allow_nan=False), st.just(10**40), st.just(-5)),
}
QUERY_JUNK = st.sampled_from(["-1", "0", "1e9", "99999999999999999999999999", "abc", "", "NaN", "1.5", "0x10",
                              "../../etc/passwd", "<script>alert(1)</script>", "' OR 1=1 --", "\u202e\u2028",
                              "%00", "a" * 5000])
QUERY_KEYS = st.sampled_from(["limit", "offset", "q", "mode", "lane", "status", "all", "project_id", "stream_id",
                              "since", "until", "kinds", "k", "connection_id", "ids", "page"])
CONTENT_TYPES = st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                 "application/json; charset=latin-1", "application/xml", ""])


@st.composite
def malformed(draw: Any, routes: list[tuple[str, str]], plugins: list[str]) -> dict[str, Any]:
    rule, method = draw(st.sampled_from(routes))
    # A DELETE that ignores its body would delete the connection the next examples use: it gets junk queries.
    kinds = ["query"] if method == "DELETE" else ["unparsable", "wrong_shape", "wrong_type", "content_type", "query"]
    kind = draw(st.sampled_from(kinds))
    query: list[tuple[str, str]] = []
    body = b"{}"
    content_type = "application/json"
    if kind == "unparsable":
        body = draw(st.one_of(st.sampled_from(UNPARSABLE), st.binary(min_size=1, max_size=40)))
    elif kind == "wrong_shape":
        body = draw(st.sampled_from(WRONG_SHAPE))
    elif kind == "wrong_type":
        keys = draw(st.lists(st.sampled_from(sorted(WRONG_TYPES)), min_size=1, max_size=3, unique=True))
        body = json.dumps({k: draw(WRONG_TYPES[k]) for k in keys}).encode()
    elif kind == "content_type":
        content_type = draw(CONTENT_TYPES)
        body = draw(st.sampled_from([b"name=x&credentials=y", b"--x\r\nContent-Disposition: form-data; name=a"
                                     b"\r\n\r\nb\r\n--x--\r\n", b"<a/>", '{"name": "é"}'.encode("latin-1")]))
    else:
        query = draw(st.lists(st.tuples(QUERY_KEYS, QUERY_JUNK), min_size=1, max_size=4))
    plugin = draw(st.sampled_from(plugins))
    return {"rule": rule, "method": method, "kind": kind, "plugin": plugin, "body": body,
            "content_type": content_type, "query": urlencode(query)}


def _app_routes() -> list[tuple[str, str]]:
    """The routes of the app as ``hissuno serve`` builds it (no store is touched to list them)."""
    from hissuno_airflow.web.serve import build_app

    return public_routes(build_app(token=ADMIN_TOKEN, store=None))


ROUTES = _app_routes()


def test_the_route_list_is_the_apps_whole_url_map() -> None:
    assert (f"{MOUNT}/api/search", "GET") in ROUTES, "routes of every blueprint are covered, search included"
    assert len(ROUTES) >= 30 and all(rule.startswith(MOUNT) for rule, _ in ROUTES)


@pytest.mark.parametrize(("rule", "method"), ROUTES, ids=[f"{m} {r.removeprefix(MOUNT)}" for r, m in ROUTES])
def test_every_public_route_answers_malformed_payloads_without_a_5xx_a_trace_or_a_row(
    site: hostile.Site, rule: str, method: str,
) -> None:
    assert (rule, method) in public_routes(site.app)
    tables = hostile._tables(site.store)
    client = site.app.test_client()

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(req=malformed([(rule, method)], sorted(site.connections)))
    def check(req: dict[str, Any]) -> None:
        before = hostile._counts(site.store, tables)
        r = client.open(_path(req["rule"], req["plugin"], site), method=req["method"], query_string=req["query"],
                        data=req["body"], headers={**AUTHED, "Content-Type": req["content_type"]})
        what = f"{req['method']} {req['rule']} [{req['kind']}] body={req['body'][:80]!r} query={req['query'][:80]}"
        _check(r, what)
        if r.status_code >= 400:
            assert hostile._counts(site.store, tables) == before, f"{what}: refused, yet rows changed"

    check()


def test_a_body_over_the_size_limit_is_a_json_413_at_every_route_that_takes_one(site: hostile.Site) -> None:
    tables = hostile._tables(site.store)
    before = hostile._counts(site.store, tables)
    client = site.app.test_client()
    huge = b'{"name": "' + b"a" * (17 * 1024 * 1024) + b'"}'  # MAX_CONTENT_LENGTH is 16 MiB
    tried = 0
    for rule, method in public_routes(site.app):
        if method not in ("POST", "PUT", "PATCH"):
            continue
        for plugin in sorted(site.connections):
            r = client.open(_path(rule, plugin, site), method=method, data=huge,
                            headers={**AUTHED, "Content-Type": "application/json"})
            _check(r, f"{method} {rule} ({plugin}) with 17 MiB")
            assert r.status_code in (401, 404, 405, 413), (method, rule, plugin, r.status_code)
            tried += r.status_code == 413
    assert tried >= 10
    assert hostile._counts(site.store, tables) == before


# -- bad connection fields at every plugin's connect ---------------------------------------------------


class RefuseEverything(FakeProvider):
    """Every provider base points here: any credentials that reach a provider are refused (401)."""

    name = "refuse-everything"

    @route("GET", "^/.*")
    @route("POST", "^/.*")
    @route("PUT", "^/.*")
    @route("PATCH", "^/.*")
    @route("DELETE", "^/.*")
    def refuse(self, req: FakeRequest) -> Reply:
        return 401, {"message": "Bad credentials", "error": "invalid_auth", "errors": [{"code": "unauthorized"}]}


@pytest.fixture
def providers_refuse(serve_fake: Any, monkeypatch: pytest.MonkeyPatch) -> RefuseEverything:
    """No plugin may reach the internet: every named base of every plugin is the refusing fake."""
    fake = serve_fake(RefuseEverything())
    for plugin in registry.list_plugins():
        for name in plugin.base_urls:
            monkeypatch.setenv(f"HISSUNO_{plugin.id.upper().replace('-', '_')}_{name.upper()}_URL", fake.url)
    # The server is configured for every OAuth app and GitHub App, so each connect gets past "not configured".
    for plugin in registry.list_plugins():
        auth = plugin.auth
        if isinstance(auth, OAuth2Auth):
            monkeypatch.setenv(auth.client_id_env, "hostile-client-id")
            monkeypatch.setenv(auth.client_secret_env, "hostile-client-secret")
        if isinstance(auth, GitHubAppAuth):
            monkeypatch.setenv(auth.app_slug_env, "hostile-app")
            monkeypatch.setenv(auth.app_id_env, "12345")
            monkeypatch.setenv(auth.private_key_env, new_private_key()[0])
    # Notion's connect is custom (an OAuth public integration or an internal token); its app settings.
    monkeypatch.setenv("NOTION_CLIENT_ID", "hostile-client-id")
    monkeypatch.setenv("NOTION_CLIENT_SECRET", "hostile-client-secret")
    return fake


STRUCTURAL = re.compile(r"not a map|a string|a number|a list|a map|true|NUL|lone surrogate|oversized|missing|"
                        r"off its pattern")
"""Labels of credentials no plugin may accept, provider or not."""


def _fields(auth: Any) -> tuple[Field, ...]:
    return tuple(getattr(auth, "fields", ()) or ())


def _bad_credentials(fields: tuple[Field, ...]) -> Iterator[tuple[str, Any]]:
    """Credentials maps that are wrong, from the plugin's own form fields: each field missing, blank,
    of the wrong type, with NUL, oversized or outside its pattern; unknown keys; not a map at all."""
    plausible = {f.id: f"{'SECRET' if f.secret else 'plausible'}-{f.id}-0123456789" for f in fields}
    yield "not a map", ["x"]
    yield "a string", "token"
    yield "empty", {}
    yield "unknown keys only", {"zz_unknown": "x", "__proto__": {"a": 1}}
    yield "everything plausible (the provider refuses)", plausible
    for f in fields:
        for label, value in (("blank", "   "), ("a number", 12345), ("a list", ["a"]), ("a map", {"a": "b"}),
                             ("null", None), ("true", True), ("NUL", "ab\x00cd"), ("a lone surrogate", "ab\ud800"),
                             ("oversized", "k" * 40_000), ("newlines", "a\r\nX-Injected: 1"),
                             ("unicode controls", "\u202e\u2066abc\u0007")):
            yield f"{f.id} {label}", {**plausible, f.id: value}
        if f.required:
            yield f"{f.id} missing", {k: v for k, v in plausible.items() if k != f.id}
        if f.pattern:
            yield f"{f.id} off its pattern", {**plausible, f.id: "!! not matching ¡¡"}


@pytest.mark.slow  # about 40 cases for each of a dozen plugins: half a minute
def test_bad_connection_fields_at_every_plugins_connect_are_refused_cleanly(
    site: hostile.Site, providers_refuse: RefuseEverything,
) -> None:
    tables = hostile._tables(site.store)
    client = site.app.test_client()
    plugins = registry.list_plugins()
    assert {"zendesk", "github", "hubspot", "linear", "sample"} <= {p.id for p in plugins}
    tried: dict[str, int] = {}
    for plugin in plugins:
        if plugin.coming_soon:
            continue
        auth = plugin.auth
        url = f"{MOUNT}/api/plugins/{plugin.id}/connect"
        for label, creds in _bad_credentials(_fields(auth)):
            before = hostile._counts(site.store, tables)
            payload = json.dumps({"credentials": creds}, ensure_ascii=False).encode("utf-8", "surrogatepass")
            r = client.post(url, data=payload, headers={**AUTHED, "Content-Type": "application/json"})
            what = f"{plugin.id} connect, credentials {label}"
            _check(r, what)
            after = hostile._counts(site.store, tables)
            checked = isinstance(auth, ApiKeyAuth) or (isinstance(auth, GitHubAppAuth) and auth.test is not None
                                                        and isinstance(creds, dict) and creds)
            # Malformed values are refused by any plugin; well-formed ones by the provider (every base refuses)
            # that checks its secret, so a plugin without a secret to check (``sample``) may accept those.
            if checked and (any(f.secret for f in _fields(auth)) or STRUCTURAL.search(label)):
                assert 400 <= r.status_code < 500, f"{what} -> {r.status_code} {r.get_data(as_text=True)[:200]}"
            if r.status_code >= 400:
                assert after == before, f"{what}: refused, yet rows changed"
            elif not checked:
                # An OAuth or app-install start ignores credentials: it only remembers its state.
                assert isinstance(auth, (OAuth2Auth, GitHubAppAuth, CustomAuth)), what
                changed = {t for t in tables if after[t] != before[t]}
                assert changed <= {"oauth_states"}, f"{what}: wrote {changed}"
            if isinstance(creds, dict):
                for value in creds.values():
                    if isinstance(value, str) and value.startswith("SECRET-"):
                        assert value not in r.get_data(as_text=True), f"{what}: echoed a secret field"
            tried[plugin.id] = tried.get(plugin.id, 0) + 1
        # The OAuth and install return legs with a forged state and junk: back to the page, nothing saved.
        before = hostile._counts(site.store, tables)
        for query in ({"state": "forged", "code": "x" * 5000}, {"state": "\x00", "error": "access_denied"},
                      {"installation_id": "-1", "setup_action": "install", "state": "a" * 300}, {}):
            r = client.get(f"{MOUNT}/api/plugins/oauth/{plugin.id}/callback", query_string=query, headers=AUTHED)
            _check(r, f"{plugin.id} callback {sorted(query)}")
        assert hostile._counts(site.store, tables) == before
    assert all(n >= 5 for n in tried.values()) and len(tried) >= 12, tried
    assert providers_refuse.count("^/") > 0, "plausible credentials did reach a (refusing) provider"


# -- a plugin module that raises at import ---------------------------------------------------------------

RAISING_MODULE = "import os\nraise RuntimeError('broken-plugin: missing dependency on import')\n"


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An installed entry point whose module raises when imported; the registry reloaded with it."""
    (tmp_path / "hissuno_broken_plugin.py").write_text(textwrap.dedent(RAISING_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("hissuno_broken_plugin", None)
    ep = EntryPoint(name="brokenplug", value="hissuno_broken_plugin:plugin", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    registry.reset()
    yield "brokenplug"
    registry.reset()


def test_a_plugin_that_raises_at_import_is_reported_and_the_others_keep_working(
    broken_plugin: str, store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    from hissuno_airflow.cli import main
    from hissuno_airflow.web.serve import build_app
    from tests.fixtures.web import RecordingDispatcher

    # The registry: every built-in loads, the broken one is named with its error.
    ids = {p.id for p in registry.list_plugins()}
    assert {"sample", "zendesk", "github"} <= ids and broken_plugin not in ids
    assert "missing dependency on import" in registry.load_errors()[broken_plugin]

    # The CLI lists the others and says which one failed and why.
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["plugins"]) == 0
    text = out.getvalue()
    assert "sample" in text and f"! {broken_plugin}: failed to load: RuntimeError: broken-plugin" in text

    # The API: the catalog names it; its routes are a JSON 404; another plugin connects.
    monkeypatch.setenv("HISSUNO_HOME", str(tmp_path))
    app = build_app(token=ADMIN_TOKEN, store=store, dispatcher=RecordingDispatcher())
    app.config["TESTING"] = False
    client = app.test_client()
    catalog = client.get(f"{MOUNT}/api/plugins/catalog", headers=AUTHED)
    assert catalog.status_code == 200 and catalog.get_json()["load_errors"] == [broken_plugin]
    assert "sample" in {p["id"] for p in catalog.get_json()["plugins"]}
    for path in (f"/api/plugins/{broken_plugin}", f"/api/plugins/{broken_plugin}/connect"):
        r = client.open(MOUNT + path, method="POST" if path.endswith("connect") else "GET", json={}, headers=AUTHED)
        _check(r, path)
        assert r.status_code == 404 and r.get_json()["field"] in ("plugin_id", None), r.get_json()
    made = client.post(f"{MOUNT}/api/plugins/sample/connect", json={"credentials": {"workspace": "still-works"}},
                       headers=AUTHED)
    assert made.status_code == 201, made.get_data(as_text=True)

    # The page says so (a notice the marketplace renders from the catalog).
    page = _page_text(app)
    assert f"{broken_plugin}" in page and "failed to load" in page


def _page_text(app: Any) -> str:
    """The marketplace page's visible text in headless Chromium."""
    from playwright.sync_api import expect, sync_playwright

    from hissuno_airflow.web.serve import Server
    from tests.web.test_browser import ARGS, CHROMIUM

    server = Server(app).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page()
                page.goto(f"{server.url}/?token={ADMIN_TOKEN}")
                notice = page.locator(".load-errors")
                expect(notice).to_be_visible()
                expect(page.locator('.card[data-plugin="sample"]')).to_be_visible()
                return str(notice.inner_text())
            finally:
                browser.close()
    finally:
        server.stop()
