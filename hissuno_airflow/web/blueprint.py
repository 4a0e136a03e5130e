"""The Flask blueprint of contract section 6: routes only, delegating to runtime, store and registry.

Relative to the mount (``/hissuno``):

    GET  /                                              marketplace page (public shell)
    GET  /health                                        public
    GET  /api/plugins/catalog
    GET|POST /api/projects                              projects (connections and data belong to one)
    GET  /api/connections                               connections (paged: limit, offset, q) with streams, health
    GET  /api/plugins/<plugin>                          plugin summary + its connections
    POST /api/plugins/<plugin>/connect                  api_key / oauth2 / github_app / custom
    GET|POST /api/plugins/<plugin>/connect/callback     custom return leg (public; plugin checks state)
    GET  /api/plugins/oauth/<plugin>/callback           OAuth2 and GitHub App return leg (public)
    POST /api/plugins/webhook/<plugin>[/<connection>]   webhook intake (public; signature checked)
    GET|PATCH|DELETE /api/plugins/<plugin>/<connection>
    GET|POST|DELETE  /api/plugins/<plugin>/<connection>/streams
    GET  /api/plugins/<plugin>/<connection>/instances/<stream_key>
    GET  /api/plugins/<plugin>/<connection>/runs        run history (stream_id, lane, status, limit, offset)
    GET  /api/plugins/<plugin>/<connection>/events      webhook events (failed ones stay visible)
    GET  /api/plugins/<plugin>/<connection>/errors      failed records (stream_id, status, limit)
    POST /api/plugins/<plugin>/<connection>/errors/replay    replay failed records ({"ids": [...]} or {"all": true})
    POST /api/plugins/<plugin>/<connection>/events/process   drain the inbox now
    GET  /api/plugins/<plugin>/<connection>/sync?stream_id=&mode=   manual sync, Server-Sent Events
    *    /api/plugins/<plugin>/<handler>                plugin-level custom handler
    *    /api/plugins/<plugin>/<connection>/<handler>[/...]  connection-level custom handler
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, url_for
from flask import Response as FlaskResponse

from .. import registry, settings
from ..kit.context import Request as KitRequest
from ..kit.context import Response as KitResponse
from ..kit.context import RouteCtx
from ..kit.define import PluginDef
from ..kit.errors import InputError, NotFoundError
from ..kit.input_limits import check_label, loads_json
from ..kit.streams import build_stream_id
from ..store import connections as repo
from ..store.db import Store
from ..store.projects import create_project, get_project, list_projects, parse_project_id
from . import catalog, overview
from .access import current_user, require_user
from .input_checks import check_request

bp = Blueprint("hissuno", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")
bp.before_request(require_user)
bp.before_request(check_request)  # after authentication: path and query values the store can hold
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def store() -> Store:
    """The store this app serves."""
    factory = current_app.config["HISSUNO_STORE"]
    return factory()  # type: ignore[no-any-return]


def _json_body(optional: bool = True) -> dict[str, Any]:
    raw = request.get_data(cache=True)
    if not raw.strip():
        if optional:
            return {}
        raise InputError("body: expected a JSON object", field="body")
    body = loads_json(raw, "body")  # depth, NUL, lone surrogates, NaN: a 400 naming the body
    if not isinstance(body, dict):
        raise InputError("body: expected a JSON object", field="body")
    return body


def _kit_request() -> KitRequest:
    return KitRequest(method=request.method, path=request.path, query=dict(request.args),
                      headers=dict(request.headers), body=request.get_data(cache=True))


def _render(value: Any, status: int = 200) -> Any:
    if isinstance(value, KitResponse):
        if value.redirect:
            return redirect(value.redirect, code=value.status if 300 <= value.status < 400 else 302)
        if isinstance(value.body, (bytes, str)):
            resp = FlaskResponse(value.body, status=value.status)
        else:
            resp = jsonify(value.body)
            resp.status_code = value.status
        for k, v in value.headers.items():
            resp.headers[k] = v
        return resp
    if value is None:
        return "", 204
    return jsonify(value), status


def _public_base() -> str:
    return (os.environ.get("HISSUNO_PUBLIC_URL") or "").rstrip("/")


def _external(endpoint: str, **values: Any) -> str:
    base = _public_base()
    if base:
        return base + url_for(endpoint, **values)
    return url_for(endpoint, _external=True, **values)


def _page(**query: str) -> Any:
    return redirect(url_for(".index") + ("?" + urlencode(query) if query else ""), code=302)


def _connection(plugin: PluginDef, connection_id: str) -> repo.ConnectionRow:
    return repo.get_connection(store(), connection_id, plugin_id=plugin.id)


# -- pages and catalog ----------------------------------------------------------------------------


@bp.get("/")
def index() -> Any:
    """The integrations marketplace page."""
    from ..runtime.host import current_host

    mode = "airflow" if current_host().queues_runs else "serve"  # the page links runs to Airflow
    return render_template("marketplace.html", mode=mode,
                           airflow_base=current_app.config.get("HISSUNO_AIRFLOW_BASE", ""))


@bp.get("/health")
def health() -> Any:
    """Liveness, plus the store's reachability (never details)."""
    try:
        with store().connection() as conn:
            conn.execute("SELECT 1")
        db = "ok"
    except Exception:
        db = "unavailable"
    return jsonify({"status": "ok" if db == "ok" else "degraded", "store": db}), 200 if db == "ok" else 503


@bp.get("/api/plugins/catalog")
def catalog_route() -> Any:
    """Every available plugin as a marketplace card."""
    return jsonify({"plugins": [catalog.plugin_entry(p) for p in registry.list_plugins()],
                    "load_errors": sorted(registry.load_errors())})


def _project_filter() -> str | None:
    """The ``project_id`` query parameter, checked (400 naming it unless a UUID); None when absent."""
    project = request.args.get("project_id") or None
    return parse_project_id(project) if project else None


@bp.get("/api/projects")
def projects_list() -> Any:
    """Every project; connections and ingested data belong to one."""
    default = settings.default_project_id()
    return jsonify({"projects": [{**p.public(), "default": p.id == default} for p in list_projects(store())]})


@bp.post("/api/projects")
def projects_create() -> Any:
    """A new project from ``{"name": ...}``."""
    name = _json_body().get("name")
    if not isinstance(name, str):
        raise InputError("name: expected text", field="name")
    return jsonify(create_project(store(), name).public()), 201


_MAX_WHOLE = 2**31 - 1  # beyond any page or offset, and inside PostgreSQL's LIMIT/OFFSET (bigint)


def _whole(name: str, default: int) -> int:
    raw = request.args.get(name, str(default))
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > _MAX_WHOLE:
        raise InputError(f"{name}: expected a whole number from 0 to {_MAX_WHOLE}; got {raw[:20]!r}", field=name)
    return int(raw)


def _airflow_base() -> str | None:
    """Where Airflow's UI is, for links to runs and logs; None when the page is not served by Airflow."""
    from ..runtime.host import current_host

    return str(current_app.config.get("HISSUNO_AIRFLOW_BASE", "")) if current_host().queues_runs else None


def _entries(rows: list[repo.ConnectionRow]) -> list[dict[str, Any]]:
    """Connections with their streams, each stream's newest live and backfill runs and the health."""
    from ..store.ingest_errors import open_counts
    from ..store.runs import latest_runs

    ids = [r.id for r in rows]
    streams = repo.list_streams_of(store(), ids)
    latest = latest_runs(store(), ids)
    failures = open_counts(store(), ids)
    base = _airflow_base()
    by_conn: dict[str, list[repo.StreamRow]] = {}
    for s in streams:
        by_conn.setdefault(s.connection_id, []).append(s)
    out = []
    for r in rows:
        mine = by_conn.get(r.id, [])
        live = {s.stream_id: latest[key] for s in mine if (key := (r.id, s.stream_id, "live")) in latest}
        entry = catalog.connection_entry(r, mine)
        _add_lanes(entry["streams"], latest, base)
        entry["health"] = overview.health(r, mine, live)
        entry["open_failed_records"] = failures.get(r.id, 0)
        out.append(entry)
    return out


def _add_lanes(streams: list[dict[str, Any]], latest: dict[tuple[str, str, str], dict[str, Any]],
               base: str | None) -> list[dict[str, Any]]:
    """Each stream row with its newest live run (``last_run``) and newest backfill (``last_backfill``)."""
    for s in streams:
        run, backfill = (latest.get((s["connection_id"], s["stream_id"], lane)) for lane in ("live", "backfill"))
        s["last_run"] = overview.with_links(run, base) if run else None
        s["last_backfill"] = overview.with_links(backfill, base) if backfill else None
    return streams


def _stream_rows(conn_id: str, rows: list[repo.StreamRow]) -> list[dict[str, Any]]:
    from ..store.runs import latest_runs

    return _add_lanes([catalog.stream_row(r) for r in rows], latest_runs(store(), [conn_id]), _airflow_base())


@bp.get("/api/connections")
def all_connections() -> Any:
    """Connections of the project with their stream rows, newest runs per lane and health; paged with
    ``limit`` (at most 200) and ``offset``, narrowed with ``q``, with ``per_plugin`` counts of all of them.
    Without ``limit``: every connection."""
    if "limit" not in request.args:
        rows = repo.list_connections(store(), project_id=_project_filter())
        return jsonify({"connections": _entries(rows), "total": len(rows)})
    project = _project_filter()
    rows, total = repo.list_connections_page(store(), project_id=project, limit=_whole("limit", 25),
                                             offset=_whole("offset", 0), search=request.args.get("q") or None)
    return jsonify({"connections": _entries(rows), "total": total,
                    "per_plugin": repo.count_by_plugin(store(), project_id=project)})


@bp.get("/api/plugins/<plugin_id>")
def plugin_summary(plugin_id: str) -> Any:
    """A plugin's summary and its connections, newest first."""
    plugin = registry.get_plugin(plugin_id)
    rows = repo.list_connections(store(), project_id=_project_filter(), plugin_id=plugin.id)
    return jsonify({"plugin": {"id": plugin.id, "name": plugin.name, "multi_instance": plugin.multi_instance},
                    "connections": [catalog.connection_entry(r, repo.list_streams(store(), r.id)) for r in rows]})


# -- connect --------------------------------------------------------------------------------------


@bp.post("/api/plugins/<plugin_id>/connect")
def connect(plugin_id: str) -> Any:
    """Start (or, for api_key, complete) a connection."""
    from ..runtime.connect import connect_custom, connectable_plugin, start_connect

    plugin = connectable_plugin(plugin_id)
    user = current_user() or ""
    if plugin.auth.type == "custom":
        # The plugin owns the request: it gets the untouched body (the original consumed it first).
        project = get_project(store(), request.args.get("project_id") or settings.default_project_id()).id
        answer, _ = connect_custom(plugin, store(), _kit_request(), project_id=project, user_id=user,
                                   reconnect_id=request.args.get("connection_id") or None)
        return _render(answer)
    body = _json_body()
    result = start_connect(plugin.id, body, store(), user_id=user,
                           redirect_uri=_external(".oauth_callback", plugin_id=plugin.id))
    return _render(result, 201 if result.get("created") else 200)


@bp.route("/api/plugins/<plugin_id>/connect/callback", methods=["GET", "POST"])
def custom_callback(plugin_id: str) -> Any:
    """The return leg of a custom connect flow; a saved connection lands back on the page."""
    from ..runtime.connect import connect_custom

    plugin = registry.get_plugin(plugin_id)
    if plugin.auth.type != "custom":
        raise NotFoundError(f"plugin {plugin.id!r} has no custom connect callback", field="plugin_id")
    answer, saved = connect_custom(plugin, store(), _kit_request(), project_id=settings.default_project_id(),
                                   user_id=current_user() or "", leg="callback")
    if isinstance(answer, Mapping) and answer.get("connection_id"):
        return _page(plugin=plugin.id, connection=str(answer["connection_id"]), connected="1")
    if answer is None and saved:
        return _page(plugin=plugin.id, connection=saved[-1], connected="1")
    return _render(answer)


@bp.get("/api/plugins/oauth/<plugin_id>/callback")
def oauth_callback(plugin_id: str) -> Any:
    """OAuth2 code exchange or GitHub App installation; back to the page with the outcome."""
    from ..runtime.connect import finish_callback

    registry.get_plugin(plugin_id)
    query = finish_callback(plugin_id, request.args, store(), user_id=current_user())
    return _page(**query)


# -- webhooks -------------------------------------------------------------------------------------


def _webhook(plugin_id: str, connection_id: str | None) -> Any:
    from ..runtime.webhooks import IntakeRequest, PayloadTooLarge, max_body_bytes, receive_webhook

    limit = max_body_bytes()
    if request.content_length is not None and request.content_length > limit:
        registry.get_plugin(plugin_id)  # unknown plugin stays a 404
        raise PayloadTooLarge(f"body: larger than {limit} bytes", field="body")
    body = request.stream.read(limit + 1)
    url = (_public_base() + request.full_path.rstrip("?")) if _public_base() else request.url
    result = receive_webhook(plugin_id, IntakeRequest(request.method, url, dict(request.headers), body),
                             connection_id=connection_id, store=None if connection_id is None else store(),
                             dispatcher=current_app.config.get("HISSUNO_DISPATCHER"))
    resp = jsonify(result.body)
    resp.status_code = result.status
    for k, v in result.headers.items():
        resp.headers[k] = v
    return resp


@bp.post("/api/plugins/webhook/<plugin_id>")
def webhook_static(plugin_id: str) -> Any:
    """Static webhook URL: the plugin's ``resolve_connection`` names the connection."""
    return _webhook(plugin_id, None)


@bp.post("/api/plugins/webhook/<plugin_id>/<connection_id>")
def webhook_connection(plugin_id: str, connection_id: str) -> Any:
    """Connection-scoped webhook URL."""
    return _webhook(plugin_id, connection_id)


# -- connections, custom handlers -----------------------------------------------------------------


def _route_ctx(plugin: PluginDef, conn: repo.ConnectionRow | None) -> RouteCtx:
    from ..runtime.services import ConnectionServices

    services = ConnectionServices(plugin, store=store() if conn else None, connection=conn, label="route")
    project = str(conn.project_id) if conn else settings.default_project_id()
    return RouteCtx(plugin_id=plugin.id, project_id=project, connection_id=conn.id if conn else None,
                    credentials=services.credentials() if conn is not None else None,
                    settings=dict(conn.settings) if conn else {}, services=services, logger=services.logger)


def _call_custom(plugin: PluginDef, name: str, conn: repo.ConnectionRow | None) -> Any:
    from ..runtime.handlers import call_handler

    fn = plugin.custom_handlers.get(name)
    if fn is None:
        raise NotFoundError(f"no handler {name!r} defined on plugin {plugin.id!r}", field="handler")
    if conn is None and name in plugin.connection_handlers:
        raise InputError(f"handler {name!r} needs a connection: call .../<connection_id>/{name}",
                         field="connection_id")
    return _render(call_handler(fn, _kit_request(), _route_ctx(plugin, conn)))


@bp.route("/api/plugins/<plugin_id>/<item>", methods=ALL_METHODS)
def plugin_item(plugin_id: str, item: str) -> Any:
    """A plugin-level custom handler, or one connection (GET/PATCH/DELETE)."""
    plugin = registry.get_plugin(plugin_id)
    if item in plugin.custom_handlers:
        return _call_custom(plugin, item, None)
    conn = _connection(plugin, item)
    if request.method == "GET":
        return jsonify(catalog.connection_entry(conn, repo.list_streams(store(), conn.id)))
    if request.method == "PATCH":
        body = _json_body(optional=False)
        label = body.get("account_label")
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise InputError("account_label: expected non-empty text", field="account_label")
        if label is not None:
            check_label(label, "account_label")
        sets = body.get("settings")
        if sets is not None and not isinstance(sets, dict):
            raise InputError("settings: expected an object", field="settings")
        row = repo.update_connection(store(), conn.id, account_label=label.strip() if label else None,
                                     settings=sets)
        return jsonify(catalog.connection_entry(row))
    if request.method == "DELETE":
        from ..runtime.connect import disconnect

        disconnect(store(), conn)
        return jsonify({"success": True})
    raise NotFoundError(f"no handler {item!r} defined on plugin {plugin.id!r}", field="handler")


@bp.route("/api/plugins/<plugin_id>/<connection_id>/<handler>", methods=ALL_METHODS)
@bp.route("/api/plugins/<plugin_id>/<connection_id>/<handler>/<path:rest>", methods=ALL_METHODS)
def connection_handler(plugin_id: str, connection_id: str, handler: str, rest: str = "") -> Any:
    """A connection-level custom handler (credentials loaded)."""
    plugin = registry.get_plugin(plugin_id)
    conn = _connection(plugin, connection_id)
    return _call_custom(plugin, handler, conn)


# -- streams --------------------------------------------------------------------------------------


@bp.get("/api/plugins/<plugin_id>/<connection_id>/streams")
def streams_list(plugin_id: str, connection_id: str) -> Any:
    """The plugin's stream catalog and this connection's stream rows."""
    plugin = registry.get_plugin(plugin_id)
    conn = _connection(plugin, connection_id)
    return jsonify({"catalog": [catalog.stream_entry(k, s) for k, s in plugin.streams.items()],
                    "streams": _stream_rows(conn.id, repo.list_streams(store(), conn.id))})


@bp.get("/api/plugins/<plugin_id>/<connection_id>/instances/<stream_key>")
def stream_instances(plugin_id: str, connection_id: str, stream_key: str) -> Any:
    """The instances a user can pick for a parameterized stream (calls the plugin's ``instances``)."""
    from ..runtime.streams import list_instances

    plugin = registry.get_plugin(plugin_id)
    conn = _connection(plugin, connection_id)
    if stream_key not in plugin.streams:
        raise NotFoundError(f"plugin {plugin.id!r} has no stream {stream_key!r}", field="stream_key")
    items = list_instances(store(), conn.id, stream_key)
    return jsonify({"instances": [i.model_dump() for i in items]})


@bp.post("/api/plugins/<plugin_id>/<connection_id>/streams")
def streams_upsert(plugin_id: str, connection_id: str) -> Any:
    """Create or update a stream row; frequency, filters and settings are validated (400 names the field)."""
    from ..runtime.streams import enable_stream

    plugin = registry.get_plugin(plugin_id)
    conn = _connection(plugin, connection_id)
    body = _json_body(optional=False)
    key = body.get("stream_key")
    if not isinstance(key, str) or key not in plugin.streams:
        raise InputError(f"stream_key: expected one of {', '.join(plugin.streams)}; got {key!r}", field="stream_key")
    instance = body.get("instance_id")
    if instance is not None and (not isinstance(instance, str) or not instance.strip()):
        raise InputError("instance_id: expected non-empty text", field="instance_id")
    if plugin.streams[key].parameterized and not instance:
        raise InputError(f"instance_id: stream {key!r} needs an instance", field="instance_id")
    if not plugin.streams[key].parameterized and instance:
        raise InputError(f"instance_id: stream {key!r} takes no instance", field="instance_id")
    enabled = body.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise InputError("enabled: expected true or false", field="enabled")
    cfg: dict[str, Any] = {}
    for name, attr in (("filters", "filter_config"), ("settings", "settings")):
        raw = body.get(name, body.get(attr))
        if raw is not None and not isinstance(raw, dict):
            raise InputError(f"{name}: expected an object", field=name)
        cfg[name] = raw
    row = enable_stream(store(), conn.id, build_stream_id(key, instance), enabled=enabled,
                        frequency=body.get("frequency"), filters=cfg["filters"], settings=cfg["settings"])
    return jsonify(_stream_rows(conn.id, [row])[0])


@bp.delete("/api/plugins/<plugin_id>/<connection_id>/streams")
def streams_delete(plugin_id: str, connection_id: str) -> Any:
    """Delete one stream row (``stream_id`` in the body or query)."""
    plugin = registry.get_plugin(plugin_id)
    conn = _connection(plugin, connection_id)
    sid = request.args.get("stream_id") or _json_body().get("stream_id")
    if not isinstance(sid, str) or not sid:
        raise InputError("stream_id: required", field="stream_id")
    if not repo.delete_stream(store(), conn.id, sid):
        raise NotFoundError(f"stream {sid!r} is not enabled on connection {conn.id!r}", field="stream_id")
    return jsonify({"success": True})


# -- run history ----------------------------------------------------------------------------------


@bp.get("/api/plugins/<plugin_id>/<connection_id>/runs")
def runs_list(plugin_id: str, connection_id: str) -> Any:
    """Run history, newest first: ``stream_id``, ``lane`` (scheduled, manual, backfill, webhook; live: all but
    backfill), ``status``,
    ``limit`` and ``offset``; answers ``total`` and each run's Airflow ``links`` (run and task log)."""
    from ..store.runs import list_runs_page

    conn = _connection(registry.get_plugin(plugin_id), connection_id)
    runs, total = list_runs_page(store(), conn.id, stream_id=request.args.get("stream_id") or None,
                                 lane=request.args.get("lane") or None, status=request.args.get("status") or None,
                                 limit=_whole("limit", 20), offset=_whole("offset", 0))
    base = _airflow_base()
    return jsonify({"runs": [overview.with_links(r, base) for r in runs], "total": total})


# -- webhook events -------------------------------------------------------------------------------


@bp.get("/api/plugins/<plugin_id>/<connection_id>/events")
def events_list(plugin_id: str, connection_id: str) -> Any:
    """Recent webhook events of the connection; failed ones carry their error."""
    from ..runtime.webhooks import list_events

    plugin = registry.get_plugin(plugin_id)
    conn = _connection(plugin, connection_id)
    return jsonify({"events": list_events(store(), conn.id, status=request.args.get("status") or None)})


@bp.post("/api/plugins/<plugin_id>/<connection_id>/events/process")
def events_process(plugin_id: str, connection_id: str) -> Any:
    """Drain a stream's inbox now (retry failed events)."""
    from ..runtime.webhooks import process_inbox

    plugin = registry.get_plugin(plugin_id)
    conn = _connection(plugin, connection_id)
    sid = _json_body().get("stream_id") or request.args.get("stream_id")
    if not isinstance(sid, str) or not sid:
        raise InputError("stream_id: required", field="stream_id")
    res = process_inbox(conn.id, sid, store=store())
    return jsonify({"done": res.done, "failed": res.failed, "errors": res.errors})


# -- failed records -------------------------------------------------------------------------------


@bp.get("/api/plugins/<plugin_id>/<connection_id>/errors")
def errors_list(plugin_id: str, connection_id: str) -> Any:
    """Failed records of the connection, newest first, with their redacted record and error and how a replay
    would treat them (``stream_id``, ``status`` = open|resolved|superseded|all, ``limit``)."""
    from ..runtime.replay import list_failed_records

    conn = _connection(registry.get_plugin(plugin_id), connection_id)
    limit = _whole("limit", 100)
    status = request.args.get("status") or "open"
    return jsonify({"errors": list_failed_records(store(), conn.id, stream_id=request.args.get("stream_id") or None,
                                                  status=None if status == "all" else status,
                                                  limit=limit)})


@bp.post("/api/plugins/<plugin_id>/<connection_id>/errors/replay")
def errors_replay(plugin_id: str, connection_id: str) -> Any:
    """Replay failed records now: ``{"ids": [...]}`` or ``{"all": true, "stream_id": optional}``; answers each
    record's outcome and the replay runs (409 while a sync of the stream runs)."""
    from ..runtime.replay import replay_failed

    conn = _connection(registry.get_plugin(plugin_id), connection_id)
    body = _json_body(optional=False)
    ids = body.get("ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids)):
        raise InputError("ids: expected a list of failed record ids", field="ids")
    all_open = body.get("all", False)
    if not isinstance(all_open, bool):
        raise InputError("all: expected true or false", field="all")
    sid = body.get("stream_id")
    if sid is not None and not isinstance(sid, str):
        raise InputError("stream_id: expected text", field="stream_id")
    report = replay_failed(conn.id, ids or None, all_open=all_open, stream_id=sid or None, store=store())
    return jsonify(report.to_json())


# -- manual sync with progress --------------------------------------------------------------------


@bp.get("/api/plugins/<plugin_id>/<connection_id>/sync")
def sync(plugin_id: str, connection_id: str) -> Any:
    """Run one enabled stream now and stream its progress as Server-Sent Events (reference 2.9).

    A stream that is not enabled is refused before any event (404 without a row, 409 when disabled);
    nothing is written.
    """
    from ..runtime.host import current_host
    from ..runtime.streams import enabled_stream
    from .sse import queued_sync_events, sync_events

    plugin = registry.get_plugin(plugin_id)
    conn = _connection(plugin, connection_id)
    sid = request.args.get("stream_id") or request.args.get("streamId")
    if not sid:
        raise InputError("stream_id: required", field="stream_id")
    enabled_stream(store(), conn.id, sid)
    mode = "full" if request.args.get("mode") == "full" else "incremental"
    if current_host().queues_runs:
        # Under Airflow the run is a DAG run (worker, XCom cursor, pools); the page follows its run row.
        events = queued_sync_events(store(), conn.id, sid, mode, current_user() or "hissuno")
    else:
        events = sync_events(store(), conn.id, sid, mode)
    return FlaskResponse(
        events, mimetype="text/event-stream",
        # No "Connection: keep-alive" (reference 2.9): hop-by-hop headers are the server's business
        # (PEP 3333), and the dev server would then swallow the browser's next request on that socket.
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )
