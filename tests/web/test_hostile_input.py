"""Hostile input over every route of the blueprint: NUL characters, lone surrogates, nesting depth and
oversized values in path segments, query strings and JSON bodies, with and without the admin token.

Every answer is below 500, an error is JSON (a 400 names its field), and no row is written anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hissuno_airflow.kit.input_limits import MAX_ID_CHARS, MAX_JSON_DEPTH, MAX_LABEL_CHARS
from tests.fixtures.web import ADMIN_TOKEN, RecordingDispatcher, register_test_plugins, sign

MOUNT = "/hissuno"
ID_KEYS = ("name", "account_label", "stream_key", "instance_id", "stream_id", "connection_id", "project_id")
ID_QUERY = ("stream_id", "streamId", "project_id", "connection_id", "status", "mode")


def _nul(t: str) -> str:
    return t[: len(t) // 2] + "\x00" + t[len(t) // 2:]


NUL_TEXT = st.text(max_size=12).map(_nul)
SURROGATE = st.just("ab\ud800cd")
# Longer than any id and any label: an account_label of 257 to 500 characters is a valid label, not hostile.
OVERSIZED = st.integers(max(MAX_ID_CHARS, MAX_LABEL_CHARS) + 1, 30_000).map(lambda n: "a" * n)
BAD_TEXT = st.one_of(NUL_TEXT, SURROGATE)
DEEP = st.integers(MAX_JSON_DEPTH + 1, 20_000)


def _deep_body(n: int, wrap: bool) -> bytes:
    inner = "[" * n + "]" * n
    return (('{"name": ' + inner + "}") if wrap else inner).encode()


# Where a route reads an identifier or label from its body (the plugin is ``sample``): an oversized value
# there is refused. Elsewhere a long value in valid JSON is not hostile (the route ignores it).
OVERSIZED_TARGETS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("/api/projects", "POST"): [{"name": None}],
    ("/api/plugins/<plugin_id>/<item>", "PATCH"): [{"account_label": None}],
    ("/api/plugins/<plugin_id>/connect", "POST"): [{"credentials": {"workspace": None}}],
    ("/api/plugins/<plugin_id>/<connection_id>/streams", "POST"): [
        {"stream_key": None}, {"stream_key": "knowledge", "instance_id": None}],
}


def _fill(template: Any, value: str) -> Any:
    if isinstance(template, dict):
        return {k: _fill(v, value) for k, v in template.items()}
    return value if template is None else template


@st.composite
def hostile_bodies(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["deep", "deep_in_object", "bad_value", "bad_key", "bad_setting"]))
    if kind in ("deep", "deep_in_object"):
        return _deep_body(draw(DEEP), kind == "deep_in_object")
    if kind == "bad_value":
        return json.dumps({draw(st.sampled_from(ID_KEYS)): draw(BAD_TEXT)}).encode()
    if kind == "bad_key":
        return json.dumps({draw(BAD_TEXT): 1}).encode()
    if kind == "bad_setting":
        return json.dumps({"settings": {"x": draw(BAD_TEXT)}, "credentials": {"workspace": draw(BAD_TEXT)},
                           "stream_key": "events"}).encode()
    raise AssertionError(kind)


@dataclass
class Site:
    app: Any
    store: Any
    connections: dict[str, str]


def _tables(store: Any) -> list[str]:
    with store.connection() as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                            "AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations' "
                            "ORDER BY table_name").fetchall()
    return [r["table_name"] for r in rows]


def _counts(store: Any, tables: list[str]) -> dict[str, int]:
    sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in tables)
    with store.connection() as conn:
        row = conn.execute(sql).fetchone()
    return dict(row)


@pytest.fixture
def site(store: Any) -> Site:
    from hissuno_airflow import settings as hsettings
    from hissuno_airflow.store import connections as repo
    from hissuno_airflow.web.serve import build_app
    from tests.fixtures.store import connect_sample

    register_test_plugins()
    conns = {"sample": connect_sample(store, "hostile").id}
    for plugin in ("webkey", "webcustom"):
        row, _ = repo.upsert_connection(store, project_id=hsettings.default_project_id(), plugin_id=plugin,
                                        external_account_id=f"acct-{plugin}", account_label=plugin,
                                        settings={"webhook_secret": "whsec-hostile-0123456789"})
        conns[plugin] = row.id
        repo.upsert_stream(store, connection_id=row.id, plugin_id=plugin, stream_id="events", stream_kind="issues",
                           frequency="webhook")
    app = build_app(token=ADMIN_TOKEN, store=store, dispatcher=RecordingDispatcher())
    app.config["TESTING"] = False  # errors go through the app's handlers, as in production
    return Site(app, store, conns)


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("hissuno.") or rule.endpoint == "hissuno.static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule.rule, method))
    return sorted(out)


def _valid(name: str, plugin: str, site: Site) -> str:
    if name == "plugin_id":
        return plugin
    if name in ("connection_id", "item"):
        return site.connections[plugin]
    if name == "stream_key":
        return "events"
    if name == "handler":
        return "teams"
    return "x"


@st.composite
def requests(draw: Any, site: Site) -> dict[str, Any]:
    import re

    rule, method = draw(st.sampled_from(_routes(site.app)))
    plugin = draw(st.sampled_from(sorted(site.connections)))
    args = re.findall(r"<(?:[a-z]+:)?([a-z_]+)>", rule)
    targets = OVERSIZED_TARGETS.get((rule.removeprefix(MOUNT), method), [])
    where = draw(st.sampled_from(["path", "query", "body"] + (["oversized_body"] if targets else [])
                                 if args else ["query", "body"] + (["oversized_body"] if targets else [])))
    if where == "oversized_body":
        plugin = "sample"
    values = {a: _valid(a, plugin, site) for a in args}
    query: list[tuple[str, str]] = []
    body = b""
    if where == "path":
        target = draw(st.sampled_from(args))
        # (A lone surrogate cannot travel in a URL: percent-decoding turns it into U+FFFD.)
        values[target] = draw(NUL_TEXT if target == "rest" else st.one_of(NUL_TEXT, OVERSIZED))
    elif where == "query":
        name = draw(st.sampled_from(ID_QUERY))
        query.append((name, draw(st.one_of(NUL_TEXT, OVERSIZED))))
    elif where == "oversized_body":
        body = json.dumps(_fill(draw(st.sampled_from(targets)), draw(OVERSIZED))).encode()
    else:
        body = draw(hostile_bodies())
    path = rule
    for a in args:
        path = re.sub(rf"<(?:[a-z]+:)?{a}>", quote(values[a].encode("utf-8", "surrogatepass"), safe=""), path)
    qs = urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in query])
    return {"rule": rule, "method": method, "where": where, "path": path, "query": qs, "body": body}


@pytest.mark.parametrize("authed", [True, False], ids=["admin", "anonymous"])
def test_no_route_answers_5xx_or_writes_for_hostile_input(site: Site, authed: bool) -> None:
    tables = _tables(site.store)
    assert {"integration_connections", "integration_streams", "webhook_events", "projects"} <= set(tables)
    client = site.app.test_client()
    headers = {"Content-Type": "application/json"}
    if authed:
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    seen: set[tuple[str, str]] = set()

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(req=requests(site))
    def check(req: dict[str, Any]) -> None:
        before = _counts(site.store, tables)
        r = client.open(req["path"], method=req["method"], query_string=req["query"], data=req["body"],
                        headers=headers)
        seen.add((req["rule"], req["method"]))
        what = f"{req['method']} {req['rule']} ({req['where']}) -> {r.status_code} {r.get_data(as_text=True)[:300]}"
        assert r.status_code < 500, what
        if r.status_code >= 400:
            body = r.get_json(silent=True)
            assert isinstance(body, dict) and body.get("error"), what
            if r.status_code == 400:
                assert body.get("field"), what
        if req["where"] in ("path", "query", "oversized_body") or (authed and req["method"] != "GET"):
            assert r.status_code >= 400, what
        assert _counts(site.store, tables) == before, what

    check()
    # Every route and method was tried at least once.
    missing = set(_routes(site.app)) - seen
    assert not missing, sorted(missing)


def test_signed_webhooks_with_hostile_json_are_a_named_400(site: Site) -> None:
    """Correctly signed, yet nested past the limit or holding NUL: 400 naming the body, no event stored."""
    client = site.app.test_client()
    url = f"{MOUNT}/api/plugins/webhook/webkey/{site.connections['webkey']}"
    tables = _tables(site.store)
    before = _counts(site.store, tables)
    for body in (_deep_body(100_000, False), _deep_body(MAX_JSON_DEPTH + 1, True), b'{"title": "a\\u0000b"}',
                 b'{"title": "\\ud800"}', b'{"n": NaN}'):
        headers = sign("github", body, "http://localhost" + url, secret="whsec-hostile-0123456789")
        r = client.post(url, data=body, headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == 400, (body[:40], r.status_code, r.get_data(as_text=True)[:200])
        assert r.get_json()["field"] == "body"
    assert _counts(site.store, tables) == before
    # The same signature scheme accepts an ordinary event (the refusals above are about the JSON only).
    ok = b'{"id": "e1", "title": "fine"}'
    r = client.post(url, data=ok, headers={**sign("github", ok, "http://localhost" + url,
                                                  secret="whsec-hostile-0123456789"),
                                           "Content-Type": "application/json"})
    assert r.status_code == 200, r.get_data(as_text=True)


def test_nul_in_a_webhook_connection_id_is_a_400_without_any_token(site: Site) -> None:
    r = site.app.test_client().post(f"{MOUNT}/api/plugins/webhook/webkey/%00", data=b"{}")
    assert r.status_code == 400 and r.get_json()["field"] == "connection_id"


def test_an_oversized_account_name_from_the_provider_is_a_named_400(site: Site) -> None:
    tables = _tables(site.store)
    before = _counts(site.store, tables)
    r = site.app.test_client().post(f"{MOUNT}/api/plugins/sample/connect",
                                    json={"credentials": {"workspace": "w" * 24_000}},
                                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 400 and r.get_json()["field"] == "external_account_id", r.get_data(as_text=True)[:200]
    assert _counts(site.store, tables) == before
