"""Build one Airflow DAG per enabled Hissuno stream instance.

The DAG file in ``dags/`` calls ``build_dags()``. Parse-time input is a *manifest*: one small query
against the hissuno store, cached as JSON under ``$HISSUNO_HOME/airflow/manifest.json``. When the
store cannot be reached the cached manifest is used, so an outage never makes DAGs disappear (the
dag-processor would otherwise deactivate them). Nothing else does I/O at parse time.

Rate budgets: every stream of one provider account runs in the Airflow pool
``hissuno_<plugin>_<account hash>`` (one slot by default, ``HISSUNO_POOL_SLOTS``), created on demand by
``ensure_pool`` from server-side code (connect flows, ``hissuno enable``). The pool is only assigned
once it exists (recorded in the connection's settings), because the scheduler never runs a task
whose pool is missing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from .store.connections import ConnectionRow
    from .store.db import Store

log = logging.getLogger(__name__)

DAG_PREFIX = "hissuno__"
POOL_SETTING = "airflow_pool"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_FREQ_HOURS = {"1h": 1, "6h": 6, "24h": 24}
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_RETRY_DELAY = timedelta(minutes=1)
_MAX_RETRY_DELAY = timedelta(minutes=30)


def dag_id_for(connection_id: str, stream_id: str) -> str:
    """The DAG id of one stream instance (stable, ``^[\\w.-]+$``, at most 250 characters).

    Instance ids may hold ``:`` or ``/``; those become ``_`` plus a short hash so two ids that
    differ only in such characters never collide.
    """
    safe = _UNSAFE.sub("_", stream_id)
    dag_id = f"{DAG_PREFIX}{connection_id}__{safe}"
    if safe != stream_id or len(dag_id) > 250:
        digest = hashlib.sha1(stream_id.encode(), usedforsecurity=False).hexdigest()[:8]
        dag_id = f"{dag_id[:240]}_{digest}"
    return dag_id


def pool_name_for(plugin_id: str, external_account_id: str) -> str:
    """Airflow pool shared by every stream of one provider account."""
    digest = hashlib.sha1(f"{plugin_id}:{external_account_id}".encode(), usedforsecurity=False).hexdigest()
    return f"hissuno_{plugin_id.replace('-', '_')}_{digest[:10]}"


def ensure_pool(store: Store, connection: ConnectionRow, *, slots: int | None = None) -> str:
    """Create (or keep) the account's pool and record it on the connection; server-side processes only.

    Args:
        store: the hissuno store.
        connection: the connection whose account gets a pool.
        slots: pool size; default ``HISSUNO_POOL_SLOTS`` or 1. One slot means one sync at a time per
            account, so the account never sees more than one client's paced request rate.

    Returns:
        The pool name.
    """
    from airflow.models.pool import Pool

    from .store import connections as repo

    name = pool_name_for(connection.plugin_id, connection.external_account_id)
    size = slots or int(os.environ.get("HISSUNO_POOL_SLOTS", "1"))
    if Pool.get_pool(name) is None:
        Pool.create_or_update_pool(
            name, slots=size, description=f"Hissuno rate budget: {connection.plugin_id} "
            f"{connection.account_label}", include_deferred=False,
        )
    if connection.settings.get(POOL_SETTING) != name:
        repo.update_connection(store, connection.id, settings={POOL_SETTING: name})
    return name


def try_ensure_pool(store: Store, connection: ConnectionRow) -> str | None:
    """``ensure_pool`` for callers whose stream works without it (then on ``default_pool``): logs, never raises."""
    try:
        return ensure_pool(store, connection)
    except Exception as exc:
        log.warning("could not create the Airflow pool of %s: %s", connection.id, type(exc).__name__)
        return None


# --- manifest -------------------------------------------------------------------------------------


def cache_path() -> Path:
    """Where the last good manifest is kept."""
    from . import settings

    path = settings.home() / "airflow"
    path.mkdir(parents=True, exist_ok=True)
    return path / "manifest.json"


class _OneConnection:
    """Store look-alike over a single short-timeout connection (the pool would retry for 15 s)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @contextmanager
    def connection(self) -> Iterator[Any]:
        yield self._conn


def _query_manifest() -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    from .store import connections as repo
    from .store.db import resolve_url

    timeout = int(os.environ.get("HISSUNO_PARSE_CONNECT_TIMEOUT", "5"))
    with psycopg.connect(resolve_url(), connect_timeout=timeout, row_factory=dict_row,
                         autocommit=True) as conn:
        view = cast("Store", _OneConnection(conn))
        conns = {c.id: c for c in repo.list_connections(view)}
        streams = repo.list_streams(view, enabled_only=True)
    rows = []
    for s in streams:
        c = conns.get(s.connection_id)
        if c is None:
            continue
        rows.append({
            "connection_id": s.connection_id, "plugin_id": s.plugin_id, "stream_id": s.stream_id,
            "stream_kind": s.stream_kind, "frequency": s.frequency, "account_label": c.account_label,
            "pool": c.settings.get(POOL_SETTING), "created_at": s.created_at.isoformat(),
        })
    return rows


def load_manifest() -> list[dict[str, Any]]:
    """Enabled stream instances from the store, falling back to the cached manifest when it is down."""
    path = cache_path()
    try:
        rows = _query_manifest()
    except Exception as exc:
        # Any failure (refused, timeout, auth, missing schema) keeps the last good DAGs alive.
        log.warning("hissuno: store unreachable at parse (%s); using the cached manifest", type(exc).__name__)
        try:
            return cast("list[dict[str, Any]]", json.loads(path.read_text())["streams"])
        except (OSError, ValueError, KeyError):
            return []
    text = json.dumps({"streams": rows}, sort_keys=True)
    try:
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
    except OSError as exc:
        log.warning("hissuno: cannot write the manifest cache: %s", exc)
    return rows


# --- DAGs -----------------------------------------------------------------------------------------


def _offset(dag_id: str) -> int:
    # crc32, not hash(): Python's str hash changes per process and the schedule must not.
    return zlib.crc32(dag_id.encode())


def timetable_for(frequency: str, dag_id: str) -> Any:
    """``None`` for manual/webhook; a ``CronDataIntervalTimetable`` with a stable offset otherwise."""
    hours = _FREQ_HOURS.get(frequency)
    if hours is None:
        return None
    off = _offset(dag_id)
    minute = off % 60
    hour = (off // 60) % hours
    if hours == 1:
        cron = f"{minute} * * * *"
    elif hours == 24:
        cron = f"{minute} {hour} * * *"
    else:
        cron = f"{minute} {hour}-23/{hours} * * *"
    return _cron_timetable(cron)


@functools.lru_cache(maxsize=2048)
def _cron_timetable(cron: str) -> Any:
    # At most 60 * (1 + 6 + 24) distinct expressions: sharing the (immutable) timetable saves
    # parsing the same cron expression again for every DAG of a large file.
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable(cron, timezone="UTC")


def _start_date(row: Mapping[str, Any]) -> datetime:
    try:
        created = datetime.fromisoformat(row["created_at"])
    except (KeyError, TypeError, ValueError):
        return _EPOCH
    # The stream's creation time: with HISSUNO_DAG_CATCHUP the scheduler catches up from there, never earlier.
    return created


def _doc(row: Mapping[str, Any]) -> str:
    from .registry import get_plugin

    label, description = row["stream_id"], ""
    try:
        plugin = get_plugin(row["plugin_id"])
        key = row["stream_id"].split(":", 1)[0]
        stream = plugin.streams.get(key)
        if stream is not None:
            label, description = stream.label, stream.description or ""
        name = plugin.name
    except Exception:
        name = row["plugin_id"]
    return (
        f"### {name}: {label}\n\n{description}\n\n"
        f"* connection `{row['connection_id']}` ({row['account_label']})\n"
        f"* stream `{row['stream_id']}` ({row['stream_kind']}), frequency `{row['frequency']}`\n"
        f"* outlet asset `hissuno://{row['connection_id']}/{row['stream_id']}`\n\n"
        "Trigger with `full_refresh: true` for a full sync. Backfill with "
        "`airflow backfill create --dag-id <this dag> --from-date D --to-date D --max-active-runs 1`."
    )


def dag_config_defaults() -> dict[str, Any]:
    """The DAG arguments Airflow would otherwise read from its configuration once per DAG.

    Read once per file: three config lookups per DAG were a tenth of the parse time of a 1,000-DAG
    file. The values are the configured ones, so behaviour does not change.
    """
    from airflow.sdk.configuration import conf

    return {
        "max_active_tasks": conf.getint("core", "max_active_tasks_per_dag"),
        "max_consecutive_failed_dag_runs": conf.getint("core", "max_consecutive_failed_dag_runs_per_dag"),
        "disable_bundle_versioning": conf.getboolean("dag_processor", "disable_bundle_versioning"),
    }


def build_dag(row: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> DAG:
    """The DAG of one manifest row (an enabled stream instance); ``defaults`` from ``dag_config_defaults``."""
    from airflow.sdk import DAG, Asset, Param

    from .operators.sync import SyncOperator

    dag_id = dag_id_for(row["connection_id"], row["stream_id"])
    catchup = os.environ.get("HISSUNO_DAG_CATCHUP", "").lower() in ("1", "true", "yes")
    asset = Asset(name=f"hissuno.{row['connection_id']}.{row['stream_id']}",
                  uri=f"hissuno://{row['connection_id']}/{row['stream_id']}")
    with DAG(
        dag_id=dag_id,
        schedule=timetable_for(row["frequency"], dag_id),
        start_date=_start_date(row),
        catchup=catchup,
        max_active_runs=1,
        is_paused_upon_creation=False,
        tags=["hissuno", row["plugin_id"], row["stream_kind"]],
        doc_md=_doc(row),
        **(defaults if defaults is not None else dag_config_defaults()),
    ) as dag:
        extra: dict[str, Any] = {"pool": row["pool"]} if row.get("pool") else {}
        # Passed directly rather than as DAG default_args: merging defaults per task is a
        # measurable share of parse time with a thousand DAGs in one file.
        SyncOperator(
            task_id="sync", connection_id=row["connection_id"], stream_id=row["stream_id"],
            outlets=[asset], owner="hissuno", retries=3, retry_delay=_RETRY_DELAY,
            retry_exponential_backoff=2.0, max_retry_delay=_MAX_RETRY_DELAY, **extra,
        )
    # Declared after the task, on the DAG only: DAG(params=...) runs a JSON-schema check per scheduled
    # DAG and every task deep-copies DAG params twice; together that doubled the parse time of a
    # 1,000-DAG file. The trigger form still shows the param, and a run's conf reaches the task's
    # context["params"] (dag_run_conf_overrides_params); the operator treats a missing value as False.
    dag.params["full_refresh"] = Param(False, type="boolean", description="Sync everything, ignoring the cursor")
    return dag


def build_dags() -> dict[str, DAG]:
    """Every stream DAG, keyed by DAG id; a row that fails to build is logged and skipped."""
    dags: dict[str, DAG] = {}
    rows = load_manifest()
    defaults = dag_config_defaults() if rows else {}
    for row in rows:
        try:
            dag = build_dag(row, defaults)
        except Exception:
            log.exception("hissuno: cannot build the DAG of %s/%s", row.get("connection_id"), row.get("stream_id"))
            continue
        dags[dag.dag_id] = dag
    return dags
