"""Conformance checks every plugin gets for free.

Each check is a plain function named for the promise it verifies. It returns quietly (or a small
summary) when the plugin keeps the promise and raises ``ConformanceError`` listing every problem
otherwise, so a plugin's test suite can call the checks one by one::

    from hissuno_airflow.kit import testing

    testing.definition_valid(plugin)
    testing.catalog_has_no_functions_or_secrets(plugin)
    testing.stream_ingests_records(plugin, store, connection_id, "tickets")
    testing.resync_is_idempotent(plugin, store, connection_id, "tickets")
    testing.cursor_moves_only_on_success(plugin, store, connection_id, "tickets")
    testing.auth_test_rejects_bad_credentials(plugin, store, AuthTarget(good={...}, bad={...}))
    testing.webhook_signature_enforced(plugin, store, WebhookTarget(sign=..., forge=..., connection_id=...))

The first two need the kit alone. The webhook check needs a signer from the plugin's tests: a callable
that signs a payload the way the provider does (``WebhookSigner``); the kit ships none, so a test's
signer is checked against the kit's verifier rather than copied from it. The store checks run real syncs through the runtime against a real
store (``hissuno_airflow.store.db.Store``), so the plugin's provider must be reachable: a fake server on
127.0.0.1 with the plugin's ``HISSUNO_<ID>_API_URL`` pointing at it. Store and runtime modules are
imported inside those functions, which keeps this module importable without a database driver.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any, Protocol

from pydantic import BaseModel

from .auth import ApiKeyAuth, AuthResult, CustomAuth, GitHubAppAuth, OAuth2Auth, OAuthTokens
from .context import CancelSignal, ProgressEvent, Request
from .define import PluginDef, define_plugin
from .errors import AccountExists, HissunoError, NotFoundError
from .redaction import is_sensitive_key
from .signatures import HmacSignature, JwtSignature, SharedSecretHeader, SignatureFailure
from .streams import parse_stream_id

__all__ = [
    "ENTITY_TABLES",
    "HEAVY_MODULES",
    "AuthTarget",
    "ConformanceError",
    "ConformanceTarget",
    "Store",
    "SyncResult",
    "WebhookDelivery",
    "WebhookSigner",
    "WebhookTarget",
    "auth_test_rejects_bad_credentials",
    "catalog_has_no_functions_or_secrets",
    "cursor_moves_only_on_success",
    "definition_valid",
    "find_functions_and_secrets",
    "has_freshness_window",
    "import_is_light",
    "resync_is_idempotent",
    "stream_ingests_records",
    "webhook_signature_enforced",
]

ENTITY_TABLES: Mapping[str, str] = {
    "sessions": "sessions",
    "contacts": "contacts",
    "companies": "companies",
    "issues": "issues",
    "knowledge": "knowledge_sources",
}
"""``integration_synced_records.hissuno_kind`` -> the table holding that entity."""

HEAVY_MODULES: tuple[str, ...] = ("airflow", "psycopg", "psycopg_pool", "flask", "sqlalchemy")
"""Top-level packages a plugin manifest must not import (it is imported by every Airflow task process)."""

_COUNTED_TABLES = (
    "sessions", "session_messages", "contacts", "companies", "issues", "knowledge_sources",
    "knowledge_chunks", "embeddings", "entity_relationships", "ingest_errors",
)


class Store(Protocol):
    """The part of ``hissuno_airflow.store.db.Store`` the checks use (named here so the kit stays apart)."""

    def connection(self) -> AbstractContextManager[Any]: ...


class SyncResult(Protocol):
    """The part of ``hissuno_airflow.runtime.sync.SyncResult`` the checks read."""

    run_id: str | None
    status: str
    counts: dict[str, int]
    cursor_after: datetime | None
    error: str | None


def _platform(module: str) -> ModuleType:
    """Import a runtime or store module of the platform at call time.

    By name rather than a static import: the kit must import without a database driver, and its type
    check must not pull in (and so depend on) the runtime it is testing.
    """
    return importlib.import_module(f"hissuno_airflow.{module}")


class ConformanceError(AssertionError):
    """A plugin broke a promise of the plugin contract; one line per problem.

    An ``AssertionError`` so test runners report it as a failed check, not as a crash.
    """

    def __init__(self, check: str, plugin_id: str, problems: list[str]) -> None:
        """Name the check and the plugin, then list the problems."""
        self.check = check
        self.plugin_id = plugin_id
        self.problems = problems
        lines = [f"plugin {plugin_id!r} fails {check}:"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ConformanceTarget:
    """A connection ready for the store checks, as a plugin's fake-server fixture factory returns it."""

    connection_id: str
    """A connection of the plugin whose provider (usually a fake on 127.0.0.1) is reachable."""
    stream_ids: tuple[str, ...]
    """Streams to check (``key`` or ``key:instance``); each must produce at least one record."""
    filters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Optional filters per stream id, applied when the stream is enabled."""


def _raise(check: str, plugin: PluginDef, problems: list[str]) -> None:
    if problems:
        raise ConformanceError(check, plugin.id, problems)


# -- definition ----------------------------------------------------------------------------------


def _arity_problem(where: str, fn: Callable[..., Any], nargs: int) -> str | None:
    """Whether ``fn`` can be called with ``nargs`` positional arguments, as the runtime will call it."""
    try:
        inspect.signature(fn).bind(*([None] * nargs))
    except TypeError as exc:
        return f"{where}: the runtime calls it with {nargs} argument(s); {exc}"
    except ValueError:
        return None  # builtins without a signature: nothing to say
    return None


_WHOLE_URL_TEMPLATE = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}(/|$)")


def definition_valid(plugin: PluginDef) -> None:
    """Check what ``define_plugin`` checks, plus promises it cannot see.

    Re-running ``define_plugin`` catches a ``PluginDef`` built by hand around the validation. On top:
    handlers accept the arguments the runtime passes, base URLs are absolute, and credential fields
    whose names say "secret" are marked ``secret`` (else forms would show them again).

    Raises:
        ConformanceError: One line per problem.
    """
    problems: list[str] = []
    try:
        define_plugin(**{name: getattr(plugin, name) for name in PluginDef.model_fields})
    except Exception as exc:  # any failure here is the finding, whatever its type
        problems.extend(str(exc).splitlines())

    for key, stream in plugin.streams.items():
        for attr in ("sync", "webhook", "instances"):
            fn = getattr(stream, attr)
            if fn is None:
                continue
            if not callable(fn):
                problems.append(f"streams.{key}.{attr}: expected a function; got {type(fn).__name__}")
                continue
            problem = _arity_problem(f"streams.{key}.{attr}", fn, 1)
            if problem:
                problems.append(problem)

    auth = plugin.auth
    handlers: dict[str, tuple[Any, int]] = {}
    if isinstance(auth, ApiKeyAuth):
        handlers["auth.test"] = (auth.test, 2)
    elif isinstance(auth, OAuth2Auth):
        handlers["auth.on_token_exchanged"] = (auth.on_token_exchanged, 2)
        if auth.refresh is not None:
            handlers["auth.refresh"] = (auth.refresh, 2)
    elif isinstance(auth, CustomAuth):
        handlers["auth.connect"] = (auth.connect, 2)
    for where, (fn, nargs) in handlers.items():
        problem = _arity_problem(where, fn, nargs)
        if problem:
            problems.append(problem)

    for f in getattr(auth, "fields", ()):
        if is_sensitive_key(f.id) and not f.secret:
            problems.append(f"auth.fields.{f.id}: the name says it is a secret; expected secret=True")

    for name, url in plugin.base_urls.items():
        # A leading ``{field}`` is a whole URL from the connection (kit.urls validates it when filled).
        if not url.startswith(("http://", "https://")) and not _WHOLE_URL_TEMPLATE.match(url):
            problems.append(f"base_urls.{name}: expected an absolute http(s) URL; got {url!r}")
    _raise("definition_valid", plugin, problems)


# -- catalog -------------------------------------------------------------------------------------


def _walk(obj: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """Yield (path, key, value) for every value inside ``obj``; ``key`` is None for list items."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            here = f"{path}.{k}" if path else str(k)
            yield here, k, v
            yield from _walk(v, here)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            here = f"{path}[{i}]"
            yield here, None, v
            yield from _walk(v, here)


def find_functions_and_secrets(
    obj: Any, secret_values: tuple[str, ...] = (), *, identifier_keys: frozenset[str] = frozenset({"key"})
) -> list[str]:
    """Problems of a JSON view meant for browsers: code objects, secret-looking values, known secrets.

    A sensitive key may hold only a flag (``"secret": true``) or nothing; a string under it is a leak.

    Args:
        obj: The view (dicts, lists, scalars).
        secret_values: Values that must not appear anywhere in it (e.g. app client secrets).
        identifier_keys: Keys the view's schema defines as identifiers although redaction treats them
            as sensitive (a catalog stream's ``key``).

    Returns:
        One line per problem; empty when the view is clean.
    """
    problems: list[str] = []
    for where, key, value in _walk(obj, ""):
        if callable(value) or isinstance(value, (type, BaseModel)):
            problems.append(f"{where}: holds a {type(value).__name__}, not JSON data")
        elif (isinstance(key, str) and key not in identifier_keys and is_sensitive_key(key)
              and value not in (None, "", True, False)):
            problems.append(f"{where}: sensitive key holds a value")
    try:
        text = json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as exc:
        problems.append(f"(root): not JSON-serializable: {exc}")
        text = repr(obj)
    for value in secret_values:
        if value and value in text:
            problems.append("a configured secret value appears in the view")
    return problems


def catalog_has_no_functions_or_secrets(plugin: PluginDef) -> dict[str, Any]:
    """Check the plugin's catalog card: JSON only, no functions, no secrets.

    App-level secrets named by an OAuth plugin (``client_secret_env``) are read from the environment
    so the check also proves their values never reach the card.

    Returns:
        The card, for further assertions.

    Raises:
        ConformanceError: One line per problem.
    """
    entry: dict[str, Any] = _platform("web.catalog").plugin_entry(plugin)
    secrets: list[str] = []
    if isinstance(plugin.auth, OAuth2Auth):
        secrets.append(os.environ.get(plugin.auth.client_secret_env, ""))
    _raise("catalog_has_no_functions_or_secrets", plugin,
           find_functions_and_secrets(entry, tuple(s for s in secrets if s)))
    return entry


def import_is_light(module: str, heavy: tuple[str, ...] = HEAVY_MODULES) -> None:
    """Check that importing ``module`` in a fresh interpreter loads none of ``heavy``.

    A fresh interpreter, because this process has long imported everything.

    Raises:
        ConformanceError: The import failed or pulled in a heavy package.
    """
    code = (
        "import importlib, sys; importlib.import_module(sys.argv[1]); "
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[2].split(',')))))"
    )
    proc = subprocess.run([sys.executable, "-c", code, module, ",".join(heavy)],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ConformanceError("import_is_light", module, [f"import failed: {tail}"])
    loaded = [m for m in proc.stdout.strip().split(",") if m]
    if loaded:
        raise ConformanceError("import_is_light", module, [f"importing it loads {', '.join(loaded)}"])


# -- store checks --------------------------------------------------------------------------------


def _ensure_stream(store: Store, connection_id: str, stream_id: str) -> None:
    try:
        _platform("store.connections").get_stream(store, connection_id, stream_id)
    except NotFoundError:
        _platform("runtime.streams").enable_stream(store, connection_id, stream_id)


def _sync(store: Store, connection_id: str, stream_id: str, *, signal: Any = None, on_progress: Any = None,
          **plan: Any) -> SyncResult:
    _ensure_stream(store, connection_id, stream_id)
    sync = _platform("runtime.sync")
    result: SyncResult = sync.run_stream_sync(connection_id, stream_id, sync.SyncPlan(**plan), store=store,
                                              signal=signal, on_progress=on_progress)
    return result


def _cursor(store: Store, connection_id: str, stream_id: str) -> datetime | None:
    cursor: datetime | None = _platform("store.connections").get_stream(store, connection_id, stream_id).last_sync_at
    return cursor


def _records(store: Store, connection_id: str, stream_id: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(kind, external id) -> (entity id, content hash, record updated_at, entity updated_at, source ts)."""
    out: dict[tuple[str, str], tuple[Any, ...]] = {}
    with store.connection() as conn:
        for kind, table in ENTITY_TABLES.items():
            rows = conn.execute(
                "SELECT r.external_id, r.hissuno_id::text AS hid, r.content_hash, r.updated_at AS rec_at,"
                f" e.updated_at AS ent_at, (e.id IS NOT NULL) AS present, r.source_updated_at AS src_at"
                f" FROM integration_synced_records r LEFT JOIN {table} e ON e.id = r.hissuno_id"
                " WHERE r.connection_id = %s AND r.stream_id = %s AND r.hissuno_kind = %s",
                (connection_id, stream_id, kind),
            ).fetchall()
            for r in rows:
                out[(kind, r["external_id"])] = (
                    r["hid"], r["content_hash"], r["rec_at"], r["ent_at"] if r["present"] else None, r["src_at"]
                )
    return out


def _snapshot(store: Store, connection_id: str, stream_id: str) -> dict[str, Any]:
    """Everything a run that writes nothing must leave exactly as it was."""
    with store.connection() as conn:
        counts = {t: conn.execute(f"SELECT count(*) AS n FROM {t}").fetchone()["n"] for t in _COUNTED_TABLES}
        emb = conn.execute("SELECT max(updated_at) AS t FROM embeddings").fetchone()
    return {
        "row counts": counts,
        "newest embedding": emb["t"] if emb else None,
        "records": _records(store, connection_id, stream_id),
        "cursor": _cursor(store, connection_id, stream_id),
    }


def _diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for table, n in before["row counts"].items():
        if after["row counts"][table] != n:
            problems.append(f"{table}: {n} rows before, {after['row counts'][table]} after")
    if before["newest embedding"] != after["newest embedding"]:
        problems.append("embeddings: a vector was rewritten")
    if before["cursor"] != after["cursor"]:
        problems.append(f"cursor moved from {before['cursor']} to {after['cursor']}")
    old, new = before["records"], after["records"]
    for key in sorted(set(old) ^ set(new)):
        problems.append(f"synced record {key[0]}/{key[1]} {'appeared' if key in new else 'disappeared'}")
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    for kind, ext in changed[:10]:
        problems.append(f"{kind}/{ext}: entity or its synced record was rewritten")
    if len(changed) > 10:
        problems.append(f"... and {len(changed) - 10} more rewritten records")
    return problems


def _failed_run(check: str, plugin: PluginDef, result: SyncResult, what: str) -> None:
    if result.status != "success":
        _raise(check, plugin, [f"{what}: run ended {result.status}: {result.error}"])


def stream_ingests_records(
    plugin: PluginDef, store: Store, connection_id: str, stream_id: str, *, min_records: int = 1
) -> SyncResult:
    """Run one sync and check it ingested records that point at real entities.

    Checks: the run succeeds without failed records; at least ``min_records`` records were synced;
    every synced record's entity exists; and when records carry provider times, the cursor reaches
    the newest of them (it is a high-water mark of provider time, not the wall clock).

    Returns:
        The run's result.

    Raises:
        ConformanceError: One line per problem.
    """
    check = "stream_ingests_records"
    result = _sync(store, connection_id, stream_id)
    _failed_run(check, plugin, result, "first sync")
    problems: list[str] = []
    if result.counts.get("failed", 0):
        problems.append(f"{result.counts['failed']} record(s) failed to ingest (see ingest_errors)")
    records = _records(store, connection_id, stream_id)
    if len(records) < min_records:
        problems.append(f"expected at least {min_records} synced record(s); got {len(records)}")
    for (kind, ext), (hid, *_rest, ent_at, _src) in sorted(records.items()):
        if ent_at is None:
            problems.append(f"{kind}/{ext}: synced record points at missing entity {hid}")
    stamps = [src for *_r, src in records.values() if src is not None]
    cursor = _cursor(store, connection_id, stream_id)
    if stamps and (cursor is None or cursor < max(stamps)):
        problems.append(f"cursor {cursor} is below the newest ingested provider time {max(stamps)}")
    _raise(check, plugin, problems)
    return result


def resync_is_idempotent(plugin: PluginDef, store: Store, connection_id: str, stream_id: str) -> None:
    """Sync, then sync again incrementally and in full: the repeat runs must write nothing.

    The full run matters most: it re-reads every record, so only content hashing keeps it from
    rewriting rows. Compared: row counts of every entity table, each synced entity's id and
    ``updated_at``, the synced-record rows, the newest embedding and the stream's cursor.

    Raises:
        ConformanceError: One line per problem.
    """
    check = "resync_is_idempotent"
    _failed_run(check, plugin, _sync(store, connection_id, stream_id), "first sync")
    before = _snapshot(store, connection_id, stream_id)
    if not before["records"]:
        _raise(check, plugin, ["the first sync ingested nothing, so idempotency cannot be shown"])
    problems: list[str] = []
    for mode in ("incremental", "full"):
        result = _sync(store, connection_id, stream_id, sync_mode=mode)
        _failed_run(check, plugin, result, f"{mode} resync")
        if result.counts.get("synced", 0) or result.counts.get("failed", 0):
            problems.append(f"{mode} resync: counts {result.counts}; expected nothing synced or failed")
        problems.extend(f"{mode} resync: {p}" for p in _diff(before, _snapshot(store, connection_id, stream_id)))
    _raise(check, plugin, problems)


def cursor_moves_only_on_success(plugin: PluginDef, store: Store, connection_id: str, stream_id: str) -> None:
    """Interrupt a run after its first ingested record: the cursor stays; a clean run then moves it.

    The interrupted run starts from no cursor, so it reads records whose provider times would move
    the high-water mark; it is cancelled at the first ingest event, which any plugin reaches without
    cooperating. The next, uninterrupted run must store exactly the cursor it reports.

    Raises:
        ConformanceError: One line per problem.
    """
    check = "cursor_moves_only_on_success"
    _ensure_stream(store, connection_id, stream_id)
    cursor_before = _cursor(store, connection_id, stream_id)
    signal = CancelSignal()
    ingested: list[str] = []

    def interrupt(event: ProgressEvent, counts: Mapping[str, int]) -> None:
        if event.hissuno_id is not None:
            ingested.append(event.hissuno_id)
            signal.cancel("conformance check interrupts the run")

    broken = _sync(store, connection_id, stream_id, cursor=None, signal=signal, on_progress=interrupt)
    problems: list[str] = []
    if not ingested:
        _raise(check, plugin, ["the stream ingested nothing, so the cursor has nothing to guard"])
    if broken.status == "success":
        problems.append("a cancelled run reported success")
    if _cursor(store, connection_id, stream_id) != cursor_before:
        problems.append(f"an interrupted run moved the cursor from {cursor_before} to "
                        f"{_cursor(store, connection_id, stream_id)}")
    with store.connection() as conn:
        row = conn.execute("SELECT status, cursor_after FROM integration_sync_runs WHERE id = %s",
                           (broken.run_id,)).fetchone()
    if row is None or row["status"] == "success" or row["cursor_after"] is not None:
        problems.append(f"run row of the interrupted run: {row}; expected a failed run without cursor_after")

    ok = _sync(store, connection_id, stream_id, cursor=None)
    _failed_run(check, plugin, ok, "clean run")
    stored = _cursor(store, connection_id, stream_id)
    if stored != ok.cursor_after:
        problems.append(f"clean run reported cursor {ok.cursor_after} but stored {stored}")
    has_times = any(src is not None for *_r, src in _records(store, connection_id, stream_id).values())
    if has_times and stored is None:
        problems.append("records carry provider times but the clean run left no cursor")
    _raise(check, plugin, problems)


# -- auth ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthTarget:
    """Credentials for ``auth_test_rejects_bad_credentials``, as the plugin's test supplies them.

    For ``api_key`` plugins both are credential field dicts, checked through the real connect flow. For
    ``oauth2`` plugins both are token responses (at least ``access_token``) handed to
    ``on_token_exchanged``, as the callback does after the code exchange. For ``custom`` plugins both are
    JSON bodies of ``POST .../connect`` that connect without a redirect (a token path).
    """

    good: Mapping[str, Any]
    """Accepted by the provider (a fake's known key, a token the fake issued)."""
    bad: Mapping[str, Any]
    """Refused by the provider (an unknown key, a revoked or made-up token)."""
    project_id: str | None = None
    """Project to connect in; the default project when None."""


def _no_connection_rows(store: Store, plugin_id: str) -> int:
    with store.connection() as conn:
        row = conn.execute("SELECT count(*) AS n FROM integration_connections WHERE plugin_id = %s",
                           (plugin_id,)).fetchone()
    return int(row["n"])


def _unclear(exc: BaseException, secrets_: list[str]) -> list[str]:
    """Why an error message would not help the user who typed the credentials."""
    problems: list[str] = []
    text = str(exc).strip()
    # The runtime falls back to the exception's class name when a plugin raised one without a message.
    if not text or text == type(exc).__name__ or re.fullmatch(r"[A-Z]\w*(Error|Exception)", text):
        problems.append(f"refusal carries no message, only {text or type(exc).__name__!r}")
    leaked = [s for s in secrets_ if len(s) >= 4 and s in text]
    if leaked:
        problems.append("refusal message repeats a submitted secret")
    return problems


def _as_tokens(response: Mapping[str, Any]) -> OAuthTokens:
    """A token endpoint response as ``on_token_exchanged`` receives it."""
    def text(key: str) -> str | None:
        value = response.get(key)
        return None if value is None else str(value)

    return OAuthTokens(access_token=str(response.get("access_token") or ""), refresh_token=text("refresh_token"),
                       token_type=text("token_type"), scope=text("scope"), raw=dict(response))


def auth_test_rejects_bad_credentials(plugin: PluginDef, store: Store, target: AuthTarget) -> str:
    """Good credentials connect; bad ones are refused with a clear error and write nothing.

    ``api_key``: through the real connect flow (fields checked, ``test`` run, connection saved). The bad
    credentials must end in a 400 with a message (not a bare exception name) that does not repeat them,
    and no connection row; the good ones must connect, connecting them again must be refused unless the
    request names the connection (``AccountExists``), and naming it must reconnect the same
    row. ``oauth2``: ``on_token_exchanged`` must return an account for the good token and, for the bad
    one, raise a hissuno error (``ProviderAuthError`` and kin), which the callback shows by code; any
    other exception reaches the user as ``internal_error``.

    Returns:
        The connection id (``api_key``) or the external account id (``oauth2``) of the good credentials.

    Raises:
        ConformanceError: One line per problem.
    """
    check = "auth_test_rejects_bad_credentials"
    connect = _platform("runtime.connect")
    project_id = target.project_id or _platform("settings").default_project_id()
    auth = plugin.auth
    problems: list[str] = []
    bad_secrets = [str(v) for v in target.bad.values() if isinstance(v, (str, int)) and str(v)]
    # A GitHub App's token alternative (``fields`` + ``test``) connects exactly like an api_key.
    if isinstance(auth, ApiKeyAuth) or (isinstance(auth, GitHubAppAuth) and auth.test is not None):
        def post_key(creds: Mapping[str, Any], reconnect_id: str | None = None) -> Any:
            return connect.connect_api_key(plugin, store, project_id=project_id, user_id="conformance",
                                           credentials=dict(creds), reconnect_id=reconnect_id)

        return _connects_at_once(check, plugin, store, target, post_key, bad_secrets, want_label=True)
    if isinstance(auth, OAuth2Auth):
        accounts = _platform("runtime.connect.accounts")
        call = _platform("runtime.handlers").call_handler
        ctx = accounts.auth_ctx(plugin, store, project_id, "conformance")
        try:
            call(auth.on_token_exchanged, _as_tokens(target.bad), ctx)
            problems.append("a bad token was accepted by on_token_exchanged")
        except HissunoError as exc:
            problems.extend(f"bad token: {p}" for p in _unclear(exc, bad_secrets))
        except Exception as exc:
            problems.append(f"bad token raised {type(exc).__name__}, not a hissuno error (ProviderAuthError); "
                            "the user would see internal_error")
        try:
            result = accounts.as_auth_result(call(auth.on_token_exchanged, _as_tokens(target.good), ctx),
                                             plugin)
        except Exception as exc:
            _raise(check, plugin, [*problems, f"a good token was refused: {type(exc).__name__}: {exc}"])
            raise
        if not isinstance(result, AuthResult) or not result.external_account_id:
            problems.append("a good token gave no external account id")
        _raise(check, plugin, problems)
        return str(result.external_account_id)
    if isinstance(auth, CustomAuth):
        return _custom_auth_check(plugin, store, target, project_id, bad_secrets)
    _raise(check, plugin, [f"auth type {auth.type!r}: this check covers api_key, oauth2 and custom"])
    raise AssertionError("unreachable")


def _custom_auth_check(plugin: PluginDef, store: Store, target: AuthTarget, project_id: str,
                       bad_secrets: list[str]) -> str:
    """``custom``: ``good`` and ``bad`` are JSON bodies of ``POST .../connect`` that connect at once (a
    token path); checked as ``api_key`` is, through ``connect_custom``."""


    connect = _platform("runtime.connect")

    def post(body: Mapping[str, Any], reconnect_id: str | None = None) -> Any:
        request = Request(method="POST", path=f"/api/plugins/{plugin.id}/connect", query={},
                          headers={"content-type": "application/json"}, body=json.dumps(dict(body)).encode())
        answer, _ = connect.connect_custom(plugin, store, request, project_id=project_id, user_id="conformance",
                                           reconnect_id=reconnect_id)
        return answer

    return _connects_at_once("auth_test_rejects_bad_credentials", plugin, store, target, post, bad_secrets,
                             want_label=False)


def _connects_at_once(check: str, plugin: PluginDef, store: Store, target: AuthTarget,
                      post: Callable[..., Any], bad_secrets: list[str], *, want_label: bool) -> str:
    """The checks of a connect that succeeds at once (``api_key``, a token path): bad credentials refused
    with a clear 400 and no row, good ones connected, the same account again refused unless named."""
    problems: list[str] = []
    before = _no_connection_rows(store, plugin.id)
    try:
        post(target.bad)
        problems.append("bad credentials were accepted")
    except HissunoError as exc:
        if exc.http_status != 400:
            problems.append(f"bad credentials: answered {exc.http_status} ({exc.code}); expected 400")
        problems.extend(f"bad credentials: {p}" for p in _unclear(exc, bad_secrets))
    if _no_connection_rows(store, plugin.id) != before:
        problems.append("bad credentials left a connection row")
    try:
        first = post(target.good)
    except Exception as exc:
        _raise(check, plugin, [*problems, f"good credentials were refused: {type(exc).__name__}: {exc}"])
        raise
    if not isinstance(first, Mapping) or not first.get("connection_id"):
        _raise(check, plugin, [*problems, f"good credentials did not connect: {type(first).__name__}"])
    if want_label and not first.get("account_label"):
        problems.append("good credentials connected without an account label")
    try:
        post(target.good)
        problems.append("connecting the same account again, without naming it, was accepted")
    except AccountExists:
        pass
    if post(target.good, first["connection_id"])["connection_id"] != first["connection_id"]:
        problems.append("connecting the same account twice made a second connection")
    _raise(check, plugin, problems)
    return str(first["connection_id"])


# -- webhooks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook request as the provider sends it."""

    body: bytes
    headers: Mapping[str, str]
    url: str
    """The URL posted to; it carries any query the scheme signs."""
    method: str = "POST"


class WebhookSigner(Protocol):
    """Signs ``payload`` the way the provider does, stamped ``timestamp`` (epoch seconds), for ``url``."""

    def __call__(self, payload: Any, *, url: str, timestamp: float, event_id: str) -> WebhookDelivery: ...


def _default_payload(event_id: str) -> Any:
    return {"id": event_id, "title": f"conformance event {event_id}"}


@dataclass(frozen=True)
class WebhookTarget:
    """What ``webhook_signature_enforced`` needs from the plugin's test."""

    sign: WebhookSigner
    """Signs with the secret the receiving side is configured with (connection setting or app env)."""
    forge: WebhookSigner
    """Signs the same way with another, well-formed secret."""
    connection_id: str | None = None
    """The connection-scoped route; None uses the static route (``resolve_connection``)."""
    payload: Callable[[str], Any] = _default_payload
    """Builds a distinct payload per event id, which the plugin resolves to the connection."""
    url: str | None = None
    """The public webhook URL the provider posts to; default, the route under ``https://hissuno.invalid``."""
    stream_ids: tuple[str, ...] = ()
    """Webhook streams of parameterized keys to enable (``issues:<team id>``): an instance stream cannot be
    guessed, so a plugin whose webhook handlers sit on instance streams names them here."""


def _enabled_streams(store: Store, connection_id: str, keys: list[str]) -> int:
    with store.connection() as conn:
        row = conn.execute("SELECT count(*) AS n FROM integration_streams WHERE connection_id = %s AND enabled"
                           " AND split_part(stream_id, ':', 1) = ANY(%s)", (connection_id, keys)).fetchone()
    return int(row["n"])


def has_freshness_window(scheme: Any) -> bool:
    """Whether ``scheme`` refuses old deliveries (a signed timestamp with a tolerance, or a JWT expiry)."""
    if isinstance(scheme, JwtSignature):
        return True
    return (isinstance(scheme, HmacSignature) and scheme.tolerance_seconds is not None
            and bool(scheme.timestamp_header or scheme.timestamp_field))


class _Recorder:
    def __init__(self) -> None:
        self.targets: list[tuple[str, str]] = []

    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        self.targets.extend(targets)


def _events(store: Store, plugin_id: str) -> int:
    with store.connection() as conn:
        row = conn.execute("SELECT count(*) AS n FROM webhook_events WHERE plugin_id = %s", (plugin_id,)).fetchone()
    return int(row["n"])


def webhook_signature_enforced(
    plugin: PluginDef, store: Store, target: WebhookTarget, *, now: float | None = None, stale_seconds: float = 3600,
) -> dict[str, str]:
    """The plugin's webhook path, through the runtime's intake: valid once, everything else refused.

    Checks, each with a fresh event id: a valid delivery is stored (once per enabled webhook stream) and
    wakes the inbox; the identical delivery again, and a retry signed a second later with the same event
    id, are accepted but stored and woken no more; a delivery signed with the forged secret, one whose
    body was changed after signing (unless the scheme is a shared secret, which signs no body), one
    signed ``stale_seconds`` ago (when the scheme has a freshness window) and one without its signature
    headers are refused with a signature error and write nothing. Webhook streams of the connection are
    enabled first when they are not.

    Returns:
        What was checked, by name (``"stale": "not applicable ..."`` for schemes without a window).

    Raises:
        ConformanceError: One line per problem.
    """
    check = "webhook_signature_enforced"
    scheme = plugin.webhook_signature
    if scheme is None:
        _raise(check, plugin, ["the plugin declares no webhook_signature"])
    assert scheme is not None
    hooks = [key for key, st in plugin.streams.items() if st.webhook is not None and st.instances is None]
    for sid in target.stream_ids:
        stream = plugin.streams.get(parse_stream_id(sid)[0])
        if stream is None or stream.webhook is None:
            _raise(check, plugin, [f"WebhookTarget.stream_ids: {sid!r} is not a stream with a webhook handler"])
        hooks.append(sid)
    keyed = [key for key, st in plugin.streams.items() if st.webhook is not None]
    if target.connection_id is not None:
        for key in hooks:
            _ensure_stream(store, target.connection_id, key)
    # Parameterized webhook streams (one per database, per page tree) count when the target enabled one.
    if not hooks and not (target.connection_id and _enabled_streams(store, target.connection_id, keyed)):
        _raise(check, plugin, ["no webhook stream without instances to receive the events, and the target names"
                               " no instance stream (WebhookTarget.stream_ids) nor enabled one"])
    intake = _platform("runtime.webhooks")
    at = time.time() if now is None else now
    route = f"/hissuno/api/plugins/webhook/{plugin.id}" + (f"/{target.connection_id}" if target.connection_id else "")
    url = target.url or "https://hissuno.invalid" + route
    recorder = _Recorder()
    problems: list[str] = []
    summary: dict[str, str] = {}

    def deliver(d: WebhookDelivery) -> Any:
        req = intake.IntakeRequest(d.method, d.url, dict(d.headers), d.body)
        return intake.receive_webhook(plugin.id, req, connection_id=target.connection_id, store=store,
                                      dispatcher=recorder, now=at)

    def refused(what: str, d: WebhookDelivery, reason: str | None = None) -> None:
        before = _events(store, plugin.id)
        try:
            deliver(d)
            problems.append(f"{what}: accepted; expected a 401 signature refusal")
        except SignatureFailure as exc:
            if reason and exc.reason != reason:
                problems.append(f"{what}: refused as {exc.reason!r}; expected {reason!r}")
        except HissunoError as exc:
            problems.append(f"{what}: refused with {exc.code} ({exc.http_status}); expected a 401 signature refusal")
        if _events(store, plugin.id) != before:
            problems.append(f"{what}: a webhook_events row was written")
        summary[what] = "refused"

    # Valid, once.
    valid = target.sign(target.payload("conf-valid"), url=url, timestamp=at, event_id="conf-valid")
    before = _events(store, plugin.id)
    try:
        first = deliver(valid)
    except Exception as exc:
        _raise(check, plugin, [f"valid delivery: refused: {type(exc).__name__}: {exc}"])
        raise
    stored = _events(store, plugin.id) - before
    queued = first.body.get("queued", 0) if isinstance(first.body, Mapping) else 0
    if first.status != 200:
        problems.append(f"valid delivery: answered {first.status}; expected 200")
    if stored < 1 or queued != stored:
        problems.append(f"valid delivery: {stored} row(s) stored, {queued} queued; expected the same, at least 1")
    if len(recorder.targets) != stored:
        problems.append(f"valid delivery: woke {len(recorder.targets)} inbox(es) for {stored} stored event(s)")
    summary["valid"] = f"stored {stored}"

    # Replays and a re-signed retry of the same event.
    woken = len(recorder.targets)
    retry = target.sign(target.payload("conf-valid"), url=url, timestamp=at + 1, event_id="conf-valid")
    for what, d in (("replay", valid), ("retry", retry)):
        try:
            again = deliver(d)
        except Exception as exc:
            problems.append(f"{what}: refused ({type(exc).__name__}: {exc}); providers resend, expected 200")
            continue
        if _events(store, plugin.id) - before != stored:
            problems.append(f"{what}: the same event was stored twice")
        elif not (isinstance(again.body, Mapping) and again.body.get("duplicate") is True):
            problems.append(f"{what}: not reported as a duplicate")
        if len(recorder.targets) != woken:
            problems.append(f"{what}: woke the inbox again")
        summary[what] = "not stored twice"

    refused("forged", target.forge(target.payload("conf-forged"), url=url, timestamp=at, event_id="conf-forged"),
            "bad_signature")
    if isinstance(scheme, SharedSecretHeader):
        summary["tampered"] = "not applicable: a shared secret signs no body"
    else:
        good = target.sign(target.payload("conf-tampered"), url=url, timestamp=at, event_id="conf-tampered")
        tampered = WebhookDelivery(good.body + b" ", good.headers, good.url, good.method)
        refused("tampered", tampered, "bad_signature")
    if has_freshness_window(scheme):
        old = target.sign(target.payload("conf-stale"), url=url, timestamp=at - stale_seconds, event_id="conf-stale")
        refused("stale", old, "stale")
    else:
        summary["stale"] = "not applicable: the scheme signs no timestamp"
    bare = target.sign(target.payload("conf-bare"), url=url, timestamp=at, event_id="conf-bare")
    refused("unsigned", WebhookDelivery(bare.body, {"Content-Type": "application/json"}, bare.url, bare.method),
            "missing_header")
    if _events(store, plugin.id) - before != stored:
        problems.append("refused deliveries changed the stored events")
    _raise(check, plugin, problems)
    return summary
