"""Queue runs of a stream's DAG from the API server process (sync-now and webhook wake-ups).

Manual runs carry a logical date (now, with microseconds) so XCom cursor ordering holds: Airflow
orders prior XComs by logical date, and runs without one sort unpredictably (NULLs first on
PostgreSQL). Server-side only: ``trigger_dag`` needs the metadata database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def trigger_stream_run(
    connection_id: str, stream_id: str, *, conf: dict[str, Any], user: str, coalesce: bool = False,
) -> tuple[str, str | None]:
    """Queue a manual run of the stream's DAG; returns (dag id, run id or None when coalesced).

    Args:
        connection_id: The connection.
        stream_id: The stream id.
        conf: The run's ``conf`` (``triggered_by``, ``full_refresh``).
        user: Recorded as the triggering user.
        coalesce: Skip when a run of the DAG is already queued (it will do the same work).

    Raises:
        NotFoundError: The DAG is not known to Airflow yet (the DAG processor has not parsed it).
    """
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    from ..kit.errors import NotFoundError
    from .names import dag_id_for

    dag_id = dag_id_for(connection_id, stream_id)
    if coalesce:
        with create_session() as session:
            queued = session.query(DagRun.id).filter(
                DagRun.dag_id == dag_id, DagRun.state == DagRunState.QUEUED
            ).first()
        if queued is not None:
            return dag_id, None
    try:
        run = trigger_dag(
            dag_id, triggered_by=DagRunTriggeredByType.REST_API, run_type=DagRunType.MANUAL, conf=conf,
            logical_date=datetime.now(UTC), replace_microseconds=False, triggering_user_name=user,
        )
    except DagNotFound:
        msg = (f"DAG {dag_id!r} is not in Airflow yet (the DAG processor parses new streams within a "
               "minute); try again shortly")
        raise NotFoundError(msg, field="stream_id") from None
    return dag_id, (run.run_id if run is not None else None)


def dag_run_state(dag_id: str, run_id: str) -> str | None:
    """The state of one DAG run (``queued``, ``running``, ``success``, ``failed``), None when unknown."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(DagRun.state).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).first()
    return str(row[0]) if row is not None else None
