"""One Airflow pool per provider account: every stream of the account shares its rate budget.

Created on demand from server-side code when a stream is enabled (the host's ``stream_enabled``). The
pool is only assigned to DAGs once it exists (recorded in the connection's settings), because the
scheduler never runs a task whose pool is missing.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from .names import pool_name_for

if TYPE_CHECKING:
    from ..store.connections import ConnectionRow
    from ..store.db import Store

log = logging.getLogger(__name__)
POOL_SETTING = "airflow_pool"


def ensure_pool(store: Store, connection: ConnectionRow, *, slots: int | None = None) -> str:
    """Create (or keep) the account's pool and record it on the connection; server-side processes only.

    Args:
        store: the hissuno store.
        connection: the connection whose account gets a pool.
        slots: pool size; default ``HISSUNO_POOL_SLOTS`` or 1: how many syncs of the account run at once.
            Their requests share the account's rate budget in the store, so more slots never exceed it.

    Returns:
        The pool name.
    """
    from airflow.models.pool import Pool

    from ..store import connections as repo

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
