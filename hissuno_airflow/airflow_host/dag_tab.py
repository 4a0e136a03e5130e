"""The "Hissuno" tab on a stream's DAG page in Airflow (an ``external_views`` entry, destination ``dag``).

Airflow's UI loads ``/hissuno/dag/<dag id>`` in a frame on the DAG's page. The tab says what the DAG
syncs: the connection and its health, the stream's state, schedule, cursor and last counts, the open
ingest errors, and links back to the Integrations page. It reads the store only; every text it shows
was redacted when written (errors, records) and is HTML-escaped here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from .names import dag_id_for
from .schedule import describe

if TYPE_CHECKING:
    from ..store.connections import ConnectionRow, StreamRow
    from ..store.db import Store

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px;color:#1f2933;background:#fff}
h1{font-size:18px;margin:0 0 4px}h2{font-size:15px;margin:20px 0 6px}
.muted{color:#52606d}table{border-collapse:collapse}th,td{text-align:left;padding:4px 12px 4px 0;
vertical-align:top}th{font-weight:600;color:#3e4c59;white-space:nowrap}code{font-size:13px}
.bad{color:#b42318;font-weight:600}.ok{color:#067647;font-weight:600}a{color:#175cd3}
@media (prefers-color-scheme: dark){body{background:#111;color:#e4e7eb}th{color:#cbd2d9}.muted{color:#9aa5b1}
a{color:#84adff}}
"""


def find_stream(store: Store, dag_id: str) -> StreamRow | None:
    """The stream whose DAG id is ``dag_id`` (None: not a Hissuno DAG, or its stream was removed)."""
    from ..store import connections as repo

    if not dag_id.startswith("hissuno__"):
        return None
    return next((s for s in repo.list_streams(store) if dag_id_for(s.connection_id, s.stream_id) == dag_id), None)


def _when(value: datetime | None) -> str:
    if value is None:
        return "never"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _row(label: str, value: str, *, raw: bool = False) -> str:
    return f"<tr><th scope=row>{escape(label)}</th><td>{value if raw else escape(value)}</td></tr>"


# Airflow frames the tab with sandbox="allow-scripts allow-same-origin ..." and no allow-top-navigation, so a
# plain target=_top link is blocked there. The frame is same-origin, so the link is followed from Airflow's
# own document instead; outside a frame (or if that fails) the link works as written.
_TOP_LINKS = """
document.addEventListener('click', function (e) {
  var a = e.target.closest && e.target.closest('a[target=_top]');
  if (!a || window.top === window) return;
  try {
    var d = window.top.document, b = d.createElement('a');
    b.href = a.href; d.body.appendChild(b); b.click(); b.remove(); e.preventDefault();
  } catch (err) { /* not same-origin: leave the link to the browser */ }
});
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}<script>{_TOP_LINKS}</script></body></html>")


def render(store: Store, dag_id: str, mount: str) -> tuple[int, str]:
    """``(status, html)`` of the tab for ``dag_id``; ``mount`` is where the Integrations page lives."""
    from .. import registry
    from ..store import connections as repo
    from ..store.ingest_errors import list_failed

    stream = find_stream(store, dag_id)
    if stream is None:
        body = (f"<h1>Not a Hissuno stream</h1><p class=muted>The DAG <code>{escape(dag_id)}</code> does not sync "
                f"a Hissuno stream (or its stream was removed).</p>"
                f"<p><a href='{escape(mount)}/' target=_top>Open Integrations</a></p>")
        return 404, _page("Hissuno", body)
    conn = repo.get_connection(store, stream.connection_id)
    try:
        plugin = registry.get_plugin(conn.plugin_id)
        plugin_name = plugin.name
        key = stream.stream_id.split(":", 1)[0]
        label = plugin.streams[key].label if key in plugin.streams else stream.stream_id
    except Exception:
        plugin_name, label = conn.plugin_id, stream.stream_id
    errors = list_failed(store, conn.id, stream_id=stream.stream_id, limit=20)
    link = f"{mount}/#connection-{conn.id}"
    return 200, _page(f"{plugin_name} · {label}", "".join([
        f"<h1>{escape(plugin_name)} · {escape(conn.account_label or conn.id)} · {escape(label)}</h1>",
        f"<p class=muted>DAG <code>{escape(dag_id)}</code> syncs the stream <code>{escape(stream.stream_id)}</code>"
        f" of this connection. <a href='{escape(link)}' target=_top>Manage it on the Integrations page</a>.</p>",
        "<h2>Connection</h2><table>",
        _row("Provider", plugin_name),
        _row("Account", conn.account_label or conn.external_account_id),
        _row("Hissuno connection", conn.id),
        _row("Credentials", "kept in Airflow Connections" if conn.credentials_backend == "airflow"
             else f"kept in the {conn.credentials_backend} backend"),
        _row("Health", _health(conn), raw=True),
        "</table><h2>Stream</h2><table>",
        _row("State", _state(stream), raw=True),
        _row("Schedule", describe(stream.frequency, dag_id)),
        _row("Next run", _when(stream.next_sync_at) if stream.next_sync_at else "not scheduled"),
        _row("Cursor", f"changes after {_when(stream.last_sync_at)} are synced next" if stream.last_sync_at
             else "none yet: the next run syncs everything"),
        _row("Last counts", _counts(stream.last_sync_counts)),
        _row("Filters", ", ".join(f"{k} = {v}" for k, v in sorted(stream.filter_config.items())) or "none"),
        "</table>",
        _errors(errors, link),
    ]))


def _health(conn: ConnectionRow) -> str:
    if conn.needs_reconnect:
        return (f"<span class=bad>reconnect needed</span> since {escape(_when(conn.auth_error_at))}: "
                f"{escape(conn.auth_error or '')}")
    return "<span class=ok>connected</span>"


def _state(stream: StreamRow) -> str:
    if not stream.enabled:
        return "disabled"
    status = stream.last_sync_status or "never run"
    words = {"success": "<span class=ok>last run succeeded</span>", "error": "<span class=bad>last run failed</span>",
             "in_progress": "running now", "cancelled": "last run was cancelled"}.get(status, escape(status))
    text = f"enabled, {words}"
    if stream.last_sync_error and stream.last_sync_status == "error":
        text += f": {escape(stream.last_sync_error)}"
    return text


def _counts(counts: dict[str, Any] | None) -> str:
    if not counts:
        return "no run yet"
    return ", ".join(f"{int(counts.get(k, 0)):,} {k}" for k in ("found", "synced", "skipped", "failed"))


def _errors(errors: list[Any], link: str) -> str:
    if not errors:
        return "<h2>Ingest errors</h2><p>No open ingest errors.</p>"
    rows = "".join(
        f"<tr><td>{escape(e.kind)}</td><td><code>{escape(e.external_id or '')}</code></td>"
        f"<td>{escape(e.reason)}</td><td>{escape(e.last_error or '')}</td><td>{e.attempts}</td></tr>"
        for e in errors
    )
    return (f"<h2>Ingest errors ({len(errors)} open)</h2><table><tr><th>Kind</th><th>Record</th><th>Reason</th>"
            f"<th>Last error</th><th>Attempts</th></tr>{rows}</table>"
            f"<p><a href='{escape(link)}' target=_top>Replay or resolve them on the Integrations page</a></p>")
