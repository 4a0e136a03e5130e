"""Names hissuno gives its Airflow objects: DAG ids, pools, Connections, connection types."""

from __future__ import annotations

import hashlib
import re
from collections.abc import MutableMapping

DAG_PREFIX = "hissuno__"
AIRFLOW_CONN_PREFIX = "hissuno_"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


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


def airflow_conn_id(connection_id: str) -> str:
    """Airflow Connection id holding the credentials of a Hissuno connection."""
    return AIRFLOW_CONN_PREFIX + connection_id


def conn_type_for(plugin_id: str) -> str:
    """The Airflow connection type of a plugin (``hissuno_<id>``, ``-`` becomes ``_``)."""
    return "hissuno_" + plugin_id.replace("-", "_")


CONN_TYPE_WARNING_QUIET = "airflow.models.connection=ERROR"
"""Airflow's ``[logging] namespace_levels`` entry that silences "Connection schemes (type: hissuno_x) shall
not contain '_'": Airflow logs it each time a server-side process reads a Connection whose type holds
``_`` (it builds the Connection's URI for its secrets cache). The contract fixes the types as
``hissuno_<plugin>``, and the URI is sound anyway (Airflow writes the scheme as ``hissuno-<plugin>``);
that module logs no other warning."""


def quiet_conn_type_warning(env: MutableMapping[str, str]) -> None:
    """Add ``CONN_TYPE_WARNING_QUIET`` to ``env``'s ``AIRFLOW__LOGGING__NAMESPACE_LEVELS``, keeping the user's
    entries and any level they chose for that logger; before Airflow is imported (it reads this once)."""
    current = env.get("AIRFLOW__LOGGING__NAMESPACE_LEVELS", "")
    if "airflow.models.connection" not in current:
        env["AIRFLOW__LOGGING__NAMESPACE_LEVELS"] = f"{current} {CONN_TYPE_WARNING_QUIET}".strip()
