"""Everything that makes the runtime run on Airflow, in one place: the Airflow host.

The runtime owns a small host protocol (``runtime.host.Host``); this package implements it on Airflow:
credentials in Airflow Connections (``credentials``), runs queued as DAG runs (``runs``), one pool per
provider account (``pools``), and the API-server app (``asgi``). The entry points that run under Airflow
(the DAG file, ``SyncOperator``, the API-server app, and the CLI when an Airflow installation is usable)
call ``install()`` once. Importing this package imports no Airflow module: each piece does so lazily.
"""

from __future__ import annotations

from .host import AirflowHost, airflow_usable, install

__all__ = ["AirflowHost", "airflow_usable", "install"]
