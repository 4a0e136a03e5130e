"""The ``hissuno`` command line: plugins, store, connections, streams, syncs and the dev server."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from .kit.errors import HissunoError, InputError, NotConfigured, NotFoundError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_RETRY = 4
EXIT_NOT_CONFIGURED = 5
EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}  ok
  {EXIT_FAILED}  failed: a sync run ended in an error that retrying alone will not fix, the provider refused
     (credentials, a bad answer), the store failed; fix the cause, then run again
  {EXIT_BAD_INPUT}  bad input: an argument, option or value is wrong (the message names it); also an
     account that is connected already (name it with --update)
  {EXIT_NOT_FOUND}  not found: the named connection, stream, plugin or project does not exist
  {EXIT_RETRY}  busy or temporary: a sync of the stream is already running, the provider rate-limited or
     was unavailable (also when that ended a run), the store could not be reached; the same command
     can succeed later
  {EXIT_NOT_CONFIGURED}  not configured: a server-side setting is missing (the message names it)
  130  interrupted (Ctrl-C)
"""


def exit_code(exc: HissunoError) -> int:
    """The exit code of a command that raised ``exc`` (the kit's error tree, most specific first).

    Retriable comes first: ``SyncAlreadyRunning`` is an ``InputError`` for the web (409), but a caller
    must tell "try again later" from "fix your input".
    """
    if exc.retriable:
        return EXIT_RETRY
    if isinstance(exc, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, InputError):
        return EXIT_BAD_INPUT
    if isinstance(exc, NotConfigured):
        return EXIT_NOT_CONFIGURED
    return EXIT_FAILED

_data_out: list[TextIO] = []


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text, file=_data_out[-1] if _data_out else sys.stdout)


def _store() -> Any:
    from .store.db import get_store

    _install_host()
    store = get_store()
    store.migrate()
    return store


def _install_host() -> str | None:
    """Run on the Airflow host when this machine's Airflow installation is usable (credentials in Airflow
    Connections, pools); returns why not when ``AIRFLOW_HOME`` names one that is not (None otherwise)."""
    if not os.environ.get("AIRFLOW_HOME"):
        return None
    from .airflow_host import airflow_usable, install

    why = airflow_usable()
    if why is None:
        install()
    return why


def _kv(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs:
        key, sep, val = p.partition("=")
        if not sep or not key:
            raise InputError(f"--set: expected KEY=VALUE; got {p!r}", field="--set")
        out[key] = val
    return out


def _json_arg(raw: str | None, name: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        val = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}: expected a JSON object ({exc.msg})", field=name) from None
    if not isinstance(val, dict):
        raise InputError(f"{name}: expected a JSON object; got {type(val).__name__}", field=name)
    return val


def _when(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        d = datetime.fromisoformat(raw)
    except ValueError:
        raise InputError(f"{name}: expected an ISO 8601 date or time; got {raw!r}", field=name) from None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows under a header line, each column as wide as its widest cell (the last one not padded)."""
    cells = [[str(h) for h in headers], *[["-" if v is None or v == "" else str(v) for v in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " * (len(r) > 1) + r[-1]
                     for r in cells)


def utc(value: Any) -> str:
    """A time as Airflow shows it: ``YYYY-MM-DD HH:MM:SS UTC``; ``-`` for none."""
    if not value:
        return "-"
    d = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return d.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: Any, now: datetime | None = None) -> str:
    """How long ago (``3 min ago``) or how soon (``in 2 h``) ``value`` is."""
    if not value:
        return ""
    d = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    secs = round(((now or datetime.now(UTC)) - d).total_seconds())
    a = abs(secs)
    n = f"{a} s" if a < 60 else f"{round(a / 60)} min" if a < 3600 else f"{round(a / 3600)} h" if a < 172800 \
        else f"{round(a / 86400)} d"
    return f"{n} ago" if secs >= 0 else f"in {n}"


def cmd_plugins(args: argparse.Namespace) -> int:
    from . import registry
    from .web.catalog import plugin_entry

    plugins = registry.list_plugins()
    data = [plugin_entry(p) for p in plugins]
    lines = [table(["PLUGIN", "CATEGORY", "AUTH", "STREAMS"],
                   [(p.id + (" (coming soon)" if p.coming_soon else ""), p.category, p.auth_type, ", ".join(p.streams))
                    for p in plugins])]
    errors = registry.load_errors()
    lines += [f"! {pid}: failed to load: {err}" for pid, err in errors.items()]
    _out(args, data, "\n".join(lines))
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from .store.db import get_store

    applied = get_store().migrate()
    _out(args, {"applied": applied}, f"applied {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def cmd_db_stop(args: argparse.Namespace) -> int:
    from . import settings
    from .store.db import stop_embedded

    if settings.database_url():
        raise InputError("HISSUNO_DATABASE_URL is set: that database is not hissuno's to stop",
                         field="HISSUNO_DATABASE_URL")
    pgdata = settings.home() / "pgdata"
    running = (pgdata / "postmaster.pid").exists()
    stop_embedded()
    _out(args, {"stopped": running, "pgdata": str(pgdata)},
         f"stopped the embedded PostgreSQL at {pgdata}" if running else "the embedded PostgreSQL is not running")
    return 0


_FAILED = {
    "access_denied": "the provider answered access_denied: the authorization was refused or cancelled",
    "invalid_state": "the redirect carried a state this command did not issue",
    "missing_state": "the redirect carried no state",
    "expired_state": "the state expired before the redirect arrived (HISSUNO_OAUTH_STATE_TTL)",
    "replayed_state": "the state was already used",
    "user_mismatch": "the state was issued to another user",
    "plugin_mismatch": "the state was issued for another plugin",
    "connect_failed": "the provider refused the code exchange or the plugin refused the account",
    "internal_error": "finishing the connection failed (see the log above)",
    "account_exists": "the account is connected already; run again with --update <connection> to update it",
}


def cmd_connect(args: argparse.Namespace) -> int:
    from . import registry, settings
    from .runtime.connect import AccountExists, connectable_plugin, start_connect

    if args.plugin not in {p.id for p in registry.list_plugins()}:
        names = ", ".join(p.id for p in registry.list_available_plugins())
        raise NotFoundError(f"unknown plugin {args.plugin!r}; the plugins that exist: {names}"
                            " (hissuno plugins describes them)", field="plugin")
    plugin = connectable_plugin(args.plugin)
    store = _store()
    body: dict[str, Any] = {"credentials": _kv(args.set), "project_id": args.project or settings.default_project_id()}
    if args.update:
        body["connection_id"] = args.update
    try:
        if plugin.auth.type == "oauth2" and not args.no_listen:
            return _connect_loopback(args, store, plugin, body)
        # The public callback finishes the flow (a GitHub App install, or ``--no-listen``): the state is
        # bound to the web user who will open the URL while logged in.
        base = os.environ.get("HISSUNO_PUBLIC_URL", "http://127.0.0.1:8080/hissuno").rstrip("/")
        result = start_connect(plugin.id, body, store, user_id=args.user,
                               redirect_uri=f"{base}/api/plugins/oauth/{plugin.id}/callback")
    except AccountExists as exc:
        print(f"error: {exc} (run again with --update {exc.connection['id']})", file=sys.stderr)
        return exit_code(exc)
    why = _install_host()
    if why and result.get("connection_id") and os.environ.get("HISSUNO_CREDENTIALS_BACKEND", "auto") == "auto":
        print(f"note: {why}; the credentials are kept encrypted in the hissuno store instead of an Airflow "
              "Connection", file=sys.stderr)
    if "authorize_url" in result:
        _out(args, {"authorize_url": result["authorize_url"]},
             f"Open this URL, logged in as {args.user!r}, to finish connecting:\n{result['authorize_url']}")
    else:
        _out(args, {"connection_id": result["connection_id"], "account_label": result.get("account_label"),
                    "created": result.get("created")}, result["connection_id"])
    return 0


def _connect_loopback(args: argparse.Namespace, store: Any, plugin: Any, body: dict[str, Any]) -> int:
    """``oauth2`` from a terminal: authorize URL, one redirect to a loopback listener, exchange, save."""
    import secrets
    import webbrowser

    from .runtime.connect import ConnectFailed, finish_callback, start_connect
    from .runtime.connect.loopback import LoopbackListener
    from .store import connections as repo

    user = "cli:" + secrets.token_urlsafe(12)  # this run's identity: only this listener can finish its state
    with LoopbackListener(args.port) as listener:
        result = start_connect(plugin.id, body, store, user_id=user, redirect_uri=listener.redirect_uri)
        url = result["authorize_url"]
        print(f"Open this URL in a browser to connect {plugin.name} (waiting up to {args.timeout:g} s for the "
              f"redirect to {listener.redirect_uri}):\n{url}", file=sys.stderr, flush=True)
        if args.open and not webbrowser.open(url):
            print("(could not start a browser: open the URL yourself)", file=sys.stderr, flush=True)
        outcome = listener.wait(lambda query: finish_callback(plugin.id, query, store, user_id=user),
                                timeout=args.timeout)
    error = outcome.get("error")
    if error or not outcome.get("connection"):
        reason = _FAILED.get(str(error), f"the provider answered error={error}")
        raise ConnectFailed(f"connecting {plugin.id} failed: {reason}; nothing was saved", field="code")
    row = repo.get_connection(store, outcome["connection"])
    _out(args, {"connection_id": row.id, "account_label": row.account_label}, row.id)
    return 0


def cmd_projects(args: argparse.Namespace) -> int:
    from . import settings
    from .store import projects

    store = _store()
    if args.add is not None:
        row = projects.create_project(store, args.add)
        _out(args, row.public(), row.id)
        return 0
    rows = projects.list_projects(store)
    default = settings.default_project_id()
    _out(args, [{**r.public(), "default": r.id == default} for r in rows],
         table(["PROJECT", "NAME", "DEFAULT"], [(r.id, r.name, "yes" if r.id == default else "") for r in rows]))
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    from .runtime.connect import disconnect
    from .store import connections as repo

    store = _store()
    conn = repo.get_connection(store, args.connection)
    disconnect(store, conn)
    _out(args, {"disconnected": conn.id}, f"disconnected {conn.id} ({conn.account_label}); its ingested data stays")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .store import connections as repo
    from .store.runs import list_runs

    store = _store()
    conn = repo.get_connection(store, args.connection)
    runs = list_runs(store, conn.id, stream_id=args.stream_id, status=args.status, limit=args.limit)
    rows = []
    for r in runs:
        c = r["counts"]
        window = f"{utc(r['window_start'])} → {utc(r['window_end'])}" if r["window_start"] or r["window_end"] else ""
        rows.append((utc(r["started_at"]), r["stream_id"], _LANE.get(r["triggered_by"], r["triggered_by"]), r["status"],
                     c.get("synced", 0), c.get("skipped", 0), c.get("failed", 0), r["error_message"] or window))
    _out(args, runs, table(["STARTED", "STREAM", "LANE", "STATUS", "SYNCED", "SKIPPED", "FAILED", "WINDOW / ERROR"],
                           rows) if rows else "(no runs)")
    return 0


_LANE = {"cron": "scheduled", "manual": "manual", "backfill": "backfill", "webhook": "webhook"}


def cmd_errors(args: argparse.Namespace) -> int:
    """``errors <connection>`` lists failed records; ``errors replay <connection> [ids] [--all]`` replays."""
    from .runtime.replay import list_failed_records, replay_failed
    from .store import connections as repo

    target = list(args.target)
    store = _store()
    if target[0] == "replay" and len(target) > 1:
        conn = repo.get_connection(store, target[1])
        ids = target[2:]
        if ids and args.all:
            raise InputError("--all: give either record ids or --all, not both", field="--all")
        report = replay_failed(conn.id, ids, all_open=args.all, stream_id=args.stream, store=store)
        lines = [f"{r['id']}  {r['stream_id']:<16} {r['kind']:<10} {r['external_id'] or '-':<24} {r['status']}"
                 + (f"\n    {r['error']}" if r["error"] else "") for r in report.records]
        lines.append(f"{report.resolved} resolved, {report.still_failing} still failing")
        _out(args, report.to_json(), "\n".join(lines))
        return 0 if report.still_failing == 0 else 1
    if len(target) > 1:
        raise InputError(f"errors: expected a connection, or replay <connection> [ids]; got {' '.join(target)!r}",
                         field="connection")
    conn = repo.get_connection(store, target[0])
    status = None if args.status == "all" else args.status
    rows = list_failed_records(store, conn.id, stream_id=args.stream, status=status, limit=args.limit)
    lines = [f"{r['id']}  {r['created_at'][:19]}  {r['stream_id']:<16} {r['kind']:<10} "
             f"{r['external_id'] or '-':<24} {r['status']:<8} attempts={r['attempts']} "
             f"replay={r['replay'] or 'no'}\n    {r['reason']}"
             + (f"\n    last replay: {r['last_error']}" if r["last_error"] else "") for r in rows]
    _out(args, rows, "\n".join(lines) or "(no failed records)")
    return 0


def cmd_connections(args: argparse.Namespace) -> int:
    from .store import connections as repo
    from .store.projects import get_project

    store = _store()
    project = get_project(store, args.project, field="--project").id if args.project else None
    rows = repo.list_connections(store, project_id=project, plugin_id=args.plugin)
    data = [r.public() for r in rows]
    text = table(["CONNECTION", "PLUGIN", "ACCOUNT", "STATE"],
                 [(r.id, r.plugin_id, r.account_label,
                   f"RECONNECT NEEDED (hissuno connect {r.plugin_id} --update {r.id})" if r.needs_reconnect else "ok")
                  for r in rows])
    _out(args, data, text if rows else "(none)")
    return 0


def cmd_streams(args: argparse.Namespace) -> int:
    from . import registry
    from .runtime.streams import list_instances
    from .store import connections as repo
    from .store.runs import latest_runs

    store = _store()
    conn = repo.get_connection(store, args.connection)
    plugin = registry.get_plugin(conn.plugin_id)
    rows = {r.stream_id: r for r in repo.list_streams(store, conn.id)}
    latest = latest_runs(store, [conn.id])
    data, table_rows, hints = [], [], []
    for key, st in plugin.streams.items():
        instances = [i.model_dump() for i in list_instances(store, conn.id, key)] if st.parameterized else []
        mine = [r for sid, r in rows.items() if sid == key or sid.startswith(key + ":")]
        public = []
        for r in mine:
            run = latest.get((conn.id, r.stream_id, "live"))
            public.append({**r.public(), "last_run": run})
            last = f"{run['status']} {utc(run['started_at'])} ({ago(run['started_at'])})" if run else \
                (r.last_sync_status or "never")
            nxt = f"{utc(r.next_sync_at)} ({ago(r.next_sync_at)})" if r.enabled and r.next_sync_at else \
                ("on webhooks" if r.enabled and r.frequency == "webhook" else
                 "by hand" if r.enabled and r.frequency == "manual" else "-")
            table_rows.append((r.stream_id, st.kind, "enabled" if r.enabled else "disabled", r.frequency,
                               utc(r.last_sync_at), last, nxt))
        if not mine:
            table_rows.append((key, st.kind, "not enabled", "-", "-", "-", "-"))
        data.append({"key": key, "kind": st.kind, "label": st.label, "description": st.description,
                     "frequencies": list(st.allowed_frequencies), "parameterized": st.parameterized,
                     "instances": instances, "rows": public})
        hints.append(f"  {key}: {' '.join(st.allowed_frequencies)}"
                     + (f"; instances: {', '.join(i['id'] for i in instances)}" if instances else ""))
    text = table(["STREAM", "KIND", "STATE", "FREQUENCY", "CURSOR", "LAST RUN", "NEXT RUN"], table_rows)
    _out(args, data, text + "\n\nfrequencies each stream takes (hissuno enable <connection> <stream> --frequency F):\n"
         + "\n".join(hints))
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    from . import registry
    from .runtime.streams import enable_stream
    from .store import connections as repo

    store = _store()
    if args.frequency is not None:
        # Named before the store is touched, with the streams of this plugin that do take it.
        plugin = registry.get_plugin(repo.get_connection(store, args.connection).plugin_id)
        stream = plugin.streams.get(args.stream_id.partition(":")[0])
        if stream is not None and args.frequency not in stream.allowed_frequencies:
            takers = [k for k, s in plugin.streams.items() if args.frequency in s.allowed_frequencies]
            also = f"; streams of {plugin.id} that take {args.frequency}: {', '.join(takers)}" if takers else \
                f"; no stream of {plugin.id} takes {args.frequency}"
            raise InputError(f"--frequency: stream {args.stream_id!r} takes {', '.join(stream.allowed_frequencies)};"
                             f" got {args.frequency!r}{also}", field="--frequency")
    row = enable_stream(store, args.connection, args.stream_id, enabled=not args.disable,
                        frequency=args.frequency, filters=_json_arg(args.filters, "--filters"),
                        settings=_json_arg(args.settings, "--settings"))
    _out(args, row.public(), f"{row.stream_id}: {'enabled' if row.enabled else 'disabled'} ({row.frequency})")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from .runtime.sync import SyncPlan, run_stream_sync

    store = _store()
    since, until = _when(args.since, "--since"), _when(args.until, "--until")
    if since or until:
        # An explicit window: exactly that window, like an Airflow backfill; the live cursor stays.
        plan = SyncPlan(triggered_by="backfill", cursor=since, until=until, commit_cursor=False)
    else:
        plan = SyncPlan.full() if args.full else SyncPlan()
    show = sys.stderr.isatty() and not args.json
    progress_cb, finish = _progress_bar() if show else (None, lambda: None)
    try:
        result = run_stream_sync(args.connection, args.stream_id, plan, store=store, on_progress=progress_cb)
    finally:
        finish()
    c = result.counts
    text = (f"{result.status}: {c['synced']} synced, {c['skipped']} skipped, {c['failed']} failed "
            f"({c['found']} found)" + (f"; finished {c['repaired']} pending enrichments" if c.get("repaired") else "")
            + (f"\nerror: {result.error}" if result.error else "")
            + (f"\nfailed records are kept: hissuno errors {args.connection}" if c["failed"] else ""))
    _out(args, result.to_json(), text)
    if result.status == "success":
        return EXIT_OK
    return EXIT_RETRY if result.retriable else EXIT_FAILED


def _progress_bar() -> tuple[Any, Any]:
    from rich.progress import BarColumn, Progress, TextColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[counts]}"),
                   transient=True)
    task = bar.add_task("syncing", total=None, counts="")
    bar.start()

    def on_progress(event: Any, counts: dict[str, int]) -> None:
        if event.total:
            bar.update(task, total=event.total, completed=event.current or counts["found"])
        bar.update(task, counts=f"{counts['synced']} synced, {counts['skipped']} skipped, {counts['failed']} failed")

    return on_progress, bar.stop


def cmd_serve(args: argparse.Namespace) -> int:
    from .web.serve import main as serve

    serve(args.host, args.port)
    return 0


def cmd_sample_touch(args: argparse.Namespace) -> int:
    from .plugins.sample import data
    from .store import connections as repo

    store = _store()
    conn = repo.get_connection(store, args.connection, plugin_id="sample")
    ids = args.ids or [f"conv-{i}" for i in range(args.count)]
    data.touch(conn.external_account_id, ids)
    _out(args, {"touched": ids}, f"changed {len(ids)} sample records")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from . import settings
    from .store.embedder import get_embedder
    from .store.projects import get_project
    from .store.reembed import ReembedProgress, reembed
    from .store.search import search

    store = _store()
    project_id = get_project(store, args.project or settings.default_project_id(), field="--project").id
    embedder = get_embedder()

    def progress(p: ReembedProgress) -> None:
        # stderr: --json output on stdout stays one document.
        print(f"re-embedding under {p.model}: {p.done}/{p.total}", file=sys.stderr)

    # After the embedding model changed: what has no vector of the current model is embedded first.
    reembed(store, project_id, embedder=embedder, on_progress=progress)
    hits = search(store, args.query, project_id=project_id, kinds=args.kind, connection_id=args.connection,
                  since=_when(args.since, "--since"), until=_when(args.until, "--until"), limit=args.limit,
                  mode=args.mode, embedder=embedder)
    lines = []
    for n, h in enumerate(hits, 1):
        sim = f", similarity {h.similarity:.3f}" if h.similarity is not None else ""
        lines.append(f"{n}. [{h.kind}] {h.title}  (score {h.score:.4f}{sim})")
        source = " · ".join(x for x in (h.plugin_id, h.connection_label, h.connection_id) if x)
        where = " · ".join(x for x in (source, h.external_id, h.url) if x)
        lines.append(f"   {where or 'no source connection'}")
        lines.append(f"   {h.snippet}")
    _out(args, {"query": args.query, "model": embedder.model, "results": [h.to_dict() for h in hits]},
         "\n".join(lines) if lines else "no results")
    return 0


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1; got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs)."""
    p = argparse.ArgumentParser(prog="hissuno", description="Hissuno integrations for Airflow", epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.set_defaults(fn=fn)
        return sp

    add("plugins", cmd_plugins, "list registered plugins")
    db = sub.add_parser("db", help="store administration")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    mig = dbsub.add_parser("migrate", help="create or upgrade the schema (idempotent)")
    mig.add_argument("--json", action="store_true")
    mig.set_defaults(fn=cmd_db_migrate)
    stop = dbsub.add_parser("stop", help="stop the embedded PostgreSQL (it keeps running between commands)")
    stop.add_argument("--json", action="store_true")
    stop.set_defaults(fn=cmd_db_stop)
    sp = add("connect", cmd_connect, "connect a provider account")
    sp.add_argument("plugin")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an auth field")
    sp.add_argument("--project")
    sp.add_argument("--update", "--reconnect", dest="update", metavar="CONNECTION",
                    help="update this connection (required when the account is connected already)")
    sp.add_argument("--open", action="store_true", help="oauth2: also open the authorize URL in a browser")
    sp.add_argument("--port", type=int, default=0,
                    help="oauth2: loopback port for the redirect http://127.0.0.1:PORT/callback (default: a free one)")
    sp.add_argument("--timeout", type=_positive, default=300, metavar="SECONDS",
                    help="oauth2: how long to wait for the redirect (default 300)")
    sp.add_argument("--no-listen", action="store_true",
                    help="oauth2: print a URL finished by the server's public callback instead")
    sp.add_argument("--user", default="admin",
                    help="with --no-listen (and github_app): the web user who opens the URL (default admin, "
                         "the identity of hissuno serve's admin token; under Airflow, your Airflow user name)")
    sp = add("projects", cmd_projects, "list projects (connections and data belong to one)")
    sp.add_argument("--add", metavar="NAME", help="create a project and print its id")
    sp = add("connections", cmd_connections, "list connections")
    sp.add_argument("--plugin")
    sp.add_argument("--project")
    sp = add("disconnect", cmd_disconnect, "forget a connection and its credentials (ingested data stays)")
    sp.add_argument("connection")
    sp = add("streams", cmd_streams, "list a connection's streams")
    sp.add_argument("connection")
    sp = add("enable", cmd_enable, "enable (or configure) a stream")
    sp.add_argument("connection")
    sp.add_argument("stream_id")
    sp.add_argument("--frequency", choices=["manual", "1h", "6h", "24h", "webhook"],
                    help="how the stream runs; webhook only for streams that take webhooks (hissuno streams lists "
                         "what each stream takes)")
    sp.add_argument("--filters", metavar="JSON")
    sp.add_argument("--settings", metavar="JSON")
    sp.add_argument("--disable", action="store_true")
    sp = add("sync", cmd_sync, "run one stream now")
    sp.add_argument("connection")
    sp.add_argument("stream_id")
    sp.add_argument("--full", action="store_true", help="ignore the cursor")
    sp.add_argument("--since", help="window start (ISO); with --until this is a backfill")
    sp.add_argument("--until", help="window end, exclusive (ISO)")
    sp = add("runs", cmd_runs, "a connection's run history, newest first")
    sp.add_argument("connection")
    sp.add_argument("stream_id", nargs="?")
    sp.add_argument("--status", choices=["in_progress", "success", "error", "cancelled"])
    sp.add_argument("--limit", type=_positive, default=20)
    sp = add("errors", cmd_errors, "failed records of a connection: `errors <connection>` lists them, "
                                   "`errors replay <connection> [ids...|--all]` replays them")
    sp.add_argument("target", nargs="+", metavar="[replay] connection [ids]",
                    help="the connection; `replay <connection> [ids]` replays the named records")
    sp.add_argument("--stream", help="only this stream's records")
    sp.add_argument("--status", choices=["open", "resolved", "superseded", "all"], default="open",
                    help="listing: which records (default open)")
    sp.add_argument("--limit", type=_positive, default=100)
    sp.add_argument("--all", action="store_true", help="replay: every open record (of --stream, if given)")
    sp = add("serve", cmd_serve, "serve the web routes without Airflow")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8765)
    sample = sub.add_parser("sample", help="the sample provider")
    ssub = sample.add_subparsers(dest="sample_command", required=True)
    t = ssub.add_parser("touch", help="simulate provider-side edits")
    t.add_argument("connection")
    t.add_argument("--count", type=_positive, default=1)
    t.add_argument("--ids", nargs="*")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_sample_touch)
    sp = add("search", cmd_search, "search ingested records: meaning and exact identifiers (hybrid)")
    sp.add_argument("query")
    sp.add_argument("--kind", action="append", choices=["session", "issue", "knowledge", "contact", "company"],
                    help="only this kind (repeatable; default session, issue and knowledge)")
    sp.add_argument("--connection", help="only records of this connection")
    sp.add_argument("--project", help="project id (default: the default project)")
    sp.add_argument("--since", metavar="WHEN", help="only records updated at or after (ISO 8601)")
    sp.add_argument("--until", metavar="WHEN", help="only records updated before (ISO 8601)")
    sp.add_argument("--mode", choices=["hybrid", "vector", "text"], default="hybrid",
                    help="hybrid (default), vector (meaning only) or text (words only)")
    sp.add_argument("--limit", type=int, default=10)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hissuno``; errors print one clear line and a non-zero exit code."""
    args = build_parser().parse_args(argv)
    from .airflow_host.names import quiet_conn_type_warning

    quiet_conn_type_warning(os.environ)
    # stdout carries only the command's data (so ``--json`` pipes into jq); libraries that log to
    # stdout (Airflow configures structlog that way when it is imported) are sent to stderr.
    _data_out.append(sys.stdout)
    sys.stdout = sys.stderr
    try:
        return int(args.fn(args))
    except HissunoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # The store failing under a command that does not wrap it: one line, no traceback.
        if not type(exc).__module__.startswith(("psycopg", "psycopg_pool")):
            raise
        print(f"error: the hissuno store failed ({type(exc).__name__}); retry the command", file=sys.stderr)
        return 1
    finally:
        sys.stdout = _data_out.pop()


if __name__ == "__main__":
    sys.exit(main())
