"""Names hissuno gives its Airflow objects: DAG ids, pools, Connections, connection types."""

from __future__ import annotations

import hashlib
import re

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
