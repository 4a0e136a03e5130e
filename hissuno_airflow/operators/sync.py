"""``SyncOperator``: run one Hissuno stream inside an Airflow task.

Cursor: the incremental high-water mark travels in XCom (key ``hissuno_cursor``). A run pulls the
newest cursor pushed by earlier runs (``include_prior_dates=True, map_indexes=-1``: without
``map_indexes`` Airflow returns a list once several exist) and pushes its own only after the ingest
committed, so a failed run never moves it. The store keeps the same high-water mark
(``last_sync_at``, moved by every successful run, including ``hissuno sync`` from a terminal); a run
starts from the newer of the two, so a CLI sync is never read again by the next scheduled run.

Backfill runs (``dag_run.run_type == "backfill"``) sync exactly ``[data_interval_start,
data_interval_end)`` and neither read nor write the live cursor. ``params.full_refresh`` syncs
everything. Retriable errors (rate limits, 5xx, store outages) let Airflow retry; fatal ones (bad
credentials, a malformed provider answer) fail the task without retry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ..kit.context import CancelSignal, ProgressEvent
    from ..kit.types import TriggerSource
    from ..runtime.sync import SyncPlan

CURSOR_KEY = "hissuno_cursor"
PROGRESS_KEY = "hissuno_progress"
_PROGRESS_EVERY_S = 5.0


def _run_type(context: Mapping[str, Any]) -> str:
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", None)
    return str(getattr(run_type, "value", run_type) or "")


def _parse_cursor(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return None


def _newest(*cursors: datetime | None) -> datetime | None:
    present = [c for c in cursors if c is not None]
    return max(present) if present else None


class SyncOperator(BaseOperator):
    """Sync one stream instance of a Hissuno connection into the store.

    Args:
        connection_id: the Hissuno connection id.
        stream_id: the stream id (``key`` or ``key:instance``).
        **kwargs: passed to ``BaseOperator``.
    """

    template_fields: Sequence[str] = ("connection_id", "stream_id")
    ui_color = "#e8f1ff"

    def __init__(self, *, connection_id: str, stream_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connection_id = connection_id
        self.stream_id = stream_id

    @cached_property
    def signal(self) -> CancelSignal:
        """Cancellation flag shared with the running sync (set by ``on_kill``)."""
        from ..kit.context import CancelSignal

        return CancelSignal()

    def on_kill(self) -> None:
        """Ask the running sync to stop at its next check."""
        self.signal.cancel("airflow task killed")

    def _plan(self, context: Context) -> SyncPlan:
        """What to sync: the backfill window, a full refresh, or incremental from the cursor."""
        from ..runtime.sync import SyncPlan

        params = context.get("params") or {}
        dag_run = context.get("dag_run")
        ti = context["ti"]
        external = f"{ti.dag_id}/{getattr(dag_run, 'run_id', '')}/{ti.try_number}"
        if _run_type(context) == "backfill":
            lo, hi = context["data_interval_start"], context["data_interval_end"]
            assert lo is not None and hi is not None  # backfill runs always have a data interval
            return SyncPlan.backfill(lo, hi, external_run_id=external)
        triggered_by: TriggerSource = "cron" if _run_type(context) in ("scheduled", "asset_triggered") else "manual"
        conf = getattr(dag_run, "conf", None) or {}
        if params.get("full_refresh") or conf.get("full_refresh"):
            return SyncPlan.full(triggered_by, external_run_id=external)
        pulled = None
        if context.get("prev_start_date_success"):
            # Only after an earlier success can a cursor exist; asking anyway makes the Task SDK log an
            # "XCom not found" error on every first run. Truthiness, not ``is not None``: the Task SDK
            # hands a lazy proxy, which is never None itself.
            pulled = ti.xcom_pull(task_ids=self.task_id, key=CURSOR_KEY, include_prior_dates=True, map_indexes=-1)
        from_airflow, stored = _parse_cursor(pulled), self._stored_cursor()
        if pulled and from_airflow is None:
            # Never a silent "everything": an XCom that is not one ISO timestamp is a bug to see.
            raise ValueError(f"the cursor pulled from XCom is not a timestamp: {type(pulled).__name__}")
        cursor = _newest(from_airflow, stored)
        self._cursor_source = ("the cursor the last successful run left in Airflow" if cursor is not None
                               and cursor == from_airflow else "the cursor Hissuno recorded for this stream")
        return SyncPlan(triggered_by=triggered_by, cursor=cursor, external_run_id=external)

    def _window_line(self, plan: SyncPlan) -> str:
        """The first log line: what this run syncs, in words."""
        from ..runtime.logging import window_line

        if plan.triggered_by == "backfill":
            mode, reason = "backfill", "this run's data interval"
        elif plan.sync_mode == "full":
            mode, reason = "full", "a full refresh was requested"
        elif plan.cursor is None:
            mode, reason = "incremental", "no earlier successful run, so everything"
        else:
            mode, reason = "incremental", getattr(self, "_cursor_source", "the stream's cursor")
        return window_line(self._label(), mode=mode, since=plan.cursor, until=plan.until, reason=reason)

    def _label(self) -> str:
        """``People from Airflow Probe (Probe Workspace)``, or the ids when the names cannot be read."""
        from .. import registry
        from ..kit.streams import parse_stream_id
        from ..store import connections as repo
        from ..store.db import get_store

        try:
            conn = repo.get_connection(get_store(), self.connection_id)
            plugin = registry.get_plugin(conn.plugin_id)
            key, instance = parse_stream_id(self.stream_id)
            stream = plugin.streams.get(key)
            label = stream.label if stream is not None else key
            label = f"{label} ({instance})" if instance else label
            return f"{label} from {plugin.name} ({conn.account_label or conn.id})"
        except Exception:
            return f"{self.stream_id} of connection {self.connection_id}"

    def _stored_cursor(self) -> datetime | None:
        from ..store import connections as repo
        from ..store.db import get_store

        return repo.get_stream(get_store(), self.connection_id, self.stream_id).last_sync_at

    def execute(self, context: Context) -> dict[str, Any]:
        """Run the sync; push the new cursor after it committed; return the counts."""
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        from ..airflow_host import install
        from ..runtime.sync import UNSET, run_stream_sync

        install()
        ti = context["ti"]
        conf = getattr(context.get("dag_run"), "conf", None) or {}
        if conf.get("triggered_by") == "webhook" or not self._has_sync():
            return self._drain_inbox(context)
        plan = self._plan(context)
        from ..runtime.logging import final_line, progress_line

        self.log.info("%s", self._window_line(plan))
        started = time.monotonic()
        last = [started]

        def on_progress(event: ProgressEvent, counts: dict[str, int]) -> None:
            now = time.monotonic()
            if now - last[0] >= _PROGRESS_EVERY_S:
                last[0] = now
                self.log.info("%s", progress_line(counts, now - started, current=event.current, total=event.total))
                ti.xcom_push(key=PROGRESS_KEY, value=dict(counts))

        from ..kit.errors import HissunoError

        try:
            result = run_stream_sync(self.connection_id, self.stream_id, plan, signal=self.signal,
                                     on_progress=on_progress)
        except HissunoError as exc:
            # Raised before the run started (unknown stream, store down, another run holds the lock).
            msg = f"hissuno sync of {self.connection_id}/{self.stream_id} could not start: {exc}"
            if exc.retriable:
                raise AirflowException(msg) from exc
            raise AirflowFailException(msg) from exc
        ti.xcom_push(key=PROGRESS_KEY, value=dict(result.counts))
        self.log.info("%s", final_line(result.status, result.counts, time.monotonic() - started,
                                       cursor_before=plan.cursor if plan.cursor is not UNSET else None,
                                       cursor_after=result.cursor_after, moves_cursor=plan.commit_cursor))
        if result.status == "cancelled":
            raise AirflowException(f"hissuno sync of {self.stream_id!r} was cancelled")
        if result.status != "success":
            msg = f"hissuno sync of {self.connection_id}/{self.stream_id} failed: {result.error}"
            if result.retriable:
                raise AirflowException(msg)
            raise AirflowFailException(msg)
        if plan.commit_cursor and result.cursor_after is not None:
            # Only now: the runtime returned success, so the ingest is committed.
            ti.xcom_push(key=CURSOR_KEY, value=result.cursor_after.isoformat())
        return {"status": result.status, "counts": dict(result.counts),
                "cursor": result.cursor_after.isoformat() if result.cursor_after else None}


    def _has_sync(self) -> bool:
        from .. import registry
        from ..kit.streams import parse_stream_id
        from ..store import connections as repo
        from ..store.db import get_store

        plugin = registry.get_plugin(repo.get_connection(get_store(), self.connection_id).plugin_id)
        stream = plugin.streams.get(parse_stream_id(self.stream_id)[0])
        return stream is not None and stream.sync is not None

    def _drain_inbox(self, context: Context) -> dict[str, Any]:
        """A webhook wake-up: run the stream's webhook handler over its pending events, in order."""
        from airflow.sdk.exceptions import AirflowException

        from ..airflow_host import install
        from ..runtime.webhooks import process_inbox

        install()

        result = process_inbox(self.connection_id, self.stream_id)
        counts = {"done": result.done, "failed": result.failed}
        context["ti"].xcom_push(key=PROGRESS_KEY, value=counts)
        self.log.info("Processed the webhook events waiting for %s: %s done, %s failed", self._label(),
                      result.done, result.failed)
        if result.failed:
            # Failed events stay in the inbox (visible, retried); a red run makes them noticed.
            raise AirflowException(f"{result.failed} webhook event(s) failed: {'; '.join(result.errors[:3])}")
        return {"status": "success", "inbox": counts}
