"""Build one Airflow DAG per enabled Hissuno stream instance.

The DAG file in ``dags/`` calls ``build_dags()``. Parse-time input is a *manifest*: one small query
against the hissuno store, cached as JSON under ``$HISSUNO_HOME/airflow/manifest.json``. When the
store cannot be reached the cached manifest is used, so an outage never makes DAGs disappear (the
dag-processor would otherwise deactivate them). Nothing else does I/O at parse time.

Rate budgets: every stream of one provider account runs in the Airflow pool
``hissuno_<plugin>_<account hash>`` (one slot by default, ``HISSUNO_POOL_SLOTS``), created by the
Airflow host when a stream is enabled (``airflow_host.pools``); the requests of its runs share the
account's rate budget in the store, whatever the pool's size. The pool is only assigned once it
exists (recorded in the connection's settings), because the scheduler never runs a task whose pool
is missing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .airflow_host.names import DAG_PREFIX, dag_id_for, pool_name_for
from .airflow_host.pools import POOL_SETTING, ensure_pool, try_ensure_pool
from .airflow_host.schedule import describe, start_date_for, timetable_for

if TYPE_CHECKING:
    from airflow.sdk import DAG

__all__ = ["DAG_PREFIX", "POOL_SETTING", "build_dag", "build_dags", "dag_id_for", "ensure_pool", "load_manifest",
           "pool_name_for", "timetable_for", "try_ensure_pool"]


log = logging.getLogger(__name__)

_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_MAX_RETRY_DELAY = timedelta(minutes=30)


# --- manifest -------------------------------------------------------------------------------------


def cache_path() -> Path:
    """Where the last good manifest is kept."""
    from . import settings

    path = settings.home() / "airflow"
    path.mkdir(parents=True, exist_ok=True)
    return path / "manifest.json"


def _query_manifest() -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    from .store import connections as repo
    from .store.db import resolve_url
    from .store.runs import close_expired_runs

    timeout = int(os.environ.get("HISSUNO_PARSE_CONNECT_TIMEOUT", "5"))
    with psycopg.connect(resolve_url(), connect_timeout=timeout, row_factory=dict_row,
                         autocommit=True) as conn:
        # Each parse (every ~30 s in a running Airflow) is also the periodic pass that closes runs whose
        # lease lapsed, so a killed run's stream does not show in_progress until its next run.
        close_expired_runs(conn)
        conns = {c.id: c for c in repo.list_connections(conn)}
        streams = repo.list_streams(conn, enabled_only=True)
    rows = []
    for s in streams:
        c = conns.get(s.connection_id)
        if c is None:
            continue
        rows.append({
            "connection_id": s.connection_id, "plugin_id": s.plugin_id, "stream_id": s.stream_id,
            "stream_kind": s.stream_kind, "frequency": s.frequency, "account_label": c.account_label,
            "pool": c.settings.get(POOL_SETTING), "created_at": s.created_at.isoformat(),
            "filters": s.filter_config,
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


_LANDS_IN = {
    "sessions": "Hissuno sessions (tables `sessions` and `session_messages`)",
    "contacts": "Hissuno contacts (table `contacts`)",
    "companies": "Hissuno companies (table `companies`)",
    "issues": "Hissuno issues (table `issues`)",
    "knowledge": "the Hissuno knowledge base (tables `knowledge_sources` and `knowledge_chunks`)",
    "analytics": "Hissuno analytics",
}


def _start_date(row: Mapping[str, Any], catchup: bool) -> datetime:
    try:
        created = datetime.fromisoformat(row["created_at"])
    except (KeyError, TypeError, ValueError):
        return _EPOCH
    # Before the stream's creation, so its first run is due as soon as the DAG appears (see schedule).
    return start_date_for(row["frequency"], created, catchup=catchup)


@dataclass(frozen=True)
class DagText:
    """What a DAG says about itself: its display name, one-line description and documentation."""

    display_name: str
    description: str
    doc_md: str


def _names(row: Mapping[str, Any]) -> tuple[str, str, str]:
    """(plugin name, stream label, stream description), falling back to the ids for an unknown plugin."""
    from .registry import get_plugin

    key = row["stream_id"].split(":", 1)
    label, description = key[0], ""
    try:
        plugin = get_plugin(row["plugin_id"])
    except Exception:
        return row["plugin_id"], row["stream_id"], ""
    stream = plugin.streams.get(key[0])
    if stream is not None:
        label, description = stream.label, stream.description or ""
    if len(key) > 1:
        label = f"{label} ({key[1]})"
    return plugin.name, label, description


def _filters_text(filters: Mapping[str, Any] | None) -> str:
    if not filters:
        return "none (everything the connection can read)"
    return ", ".join(f"`{k}` = `{json.dumps(v, default=str)}`" for k, v in sorted(filters.items()))


def dag_text(row: Mapping[str, Any], dag_id: str) -> DagText:
    """The display name, description and ``doc_md`` of a stream's DAG, naming the real DAG id."""
    plugin_name, label, stream_description = _names(row)
    account = row.get("account_label") or row["connection_id"]
    schedule = describe(row["frequency"], dag_id)
    lands = _LANDS_IN.get(row["stream_kind"], f"Hissuno {row['stream_kind']}")
    display = f"{plugin_name} · {account} · {label}"
    description = f"Syncs {label} from {plugin_name} ({account}) into {lands.split(' (')[0]}, {schedule}."
    if row["frequency"] in ("manual", "webhook"):
        backfill = ("This stream has no schedule, so Airflow cannot backfill it. Sync everything again with\n\n"
                    f"    airflow dags trigger {dag_id} -c '{{\"full_refresh\": true}}'\n\n"
                    "or a window from a terminal:\n\n"
                    f"    hissuno sync {row['connection_id']} {row['stream_id']} --since 2026-01-01 --until 2026-02-01\n")
    else:
        backfill = ("Backfill a date range (each run syncs exactly its data interval and leaves the live cursor "
                    "alone):\n\n"
                    f"    airflow backfill create --dag-id {dag_id} --from-date 2026-01-01 --to-date 2026-01-31 "
                    "--max-active-runs 1\n")
    doc = (
        f"### {plugin_name} · {label}\n\n"
        + (f"{stream_description}\n\n" if stream_description else "")
        + f"| | |\n|---|---|\n"
        f"| Connection | {plugin_name} `{account}` (Hissuno connection `{row['connection_id']}`) |\n"
        f"| Stream | `{row['stream_id']}` ({row['stream_kind']}) |\n"
        f"| Filters | {_filters_text(row.get('filters'))} |\n"
        f"| Schedule | {schedule} |\n"
        f"| Data lands in | {lands}; asset `hissuno://{row['connection_id']}/{row['stream_id']}` |\n\n"
        "Each run syncs what changed since the last successful run. Trigger with "
        "`{\"full_refresh\": true}` to sync everything again.\n\n"
        + backfill
    )
    return DagText(display, description, doc)


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
    from .settings import task_retry_delay_seconds

    dag_id = dag_id_for(row["connection_id"], row["stream_id"])
    text = dag_text(row, dag_id)
    catchup = os.environ.get("HISSUNO_DAG_CATCHUP", "").lower() in ("1", "true", "yes")
    asset = Asset(name=f"hissuno.{row['connection_id']}.{row['stream_id']}",
                  uri=f"hissuno://{row['connection_id']}/{row['stream_id']}")
    with DAG(
        dag_id=dag_id,
        schedule=timetable_for(row["frequency"], dag_id),
        start_date=_start_date(row, catchup),
        catchup=catchup,
        max_active_runs=1,
        is_paused_upon_creation=False,
        tags=["hissuno", row["plugin_id"], row["stream_kind"]],
        dag_display_name=text.display_name,
        description=text.description,
        doc_md=text.doc_md,
        **(defaults if defaults is not None else dag_config_defaults()),
    ) as dag:
        extra: dict[str, Any] = {"pool": row["pool"]} if row.get("pool") else {}
        # Passed directly rather than as DAG default_args: merging defaults per task is a
        # measurable share of parse time with a thousand DAGs in one file.
        SyncOperator(
            task_id="sync", connection_id=row["connection_id"], stream_id=row["stream_id"],
            outlets=[asset], owner="hissuno", retries=3, retry_delay=timedelta(seconds=task_retry_delay_seconds()),
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
