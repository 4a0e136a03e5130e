"""The Airflow plugin: the web routes at ``/hissuno`` on the API server, an "Integrations" entry at the top
of the navigation, and a "Hissuno" tab on each DAG's page.

This module is imported in every task process (Airflow loads plugins to integrate macros), so it
imports nothing heavy: the ASGI app it mounts builds Flask, the store and Airflow's auth lazily on
the first request. The routes are mounted through ``fastapi_apps`` (any auth manager, no FAB, no
CSRF), not ``flask_blueprints`` (FAB-only, under ``/pluginsv2``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from .airflow_host.asgi import HissunoASGI
from .airflow_host.timetable import StreamTimetable

MOUNT = "/hissuno"


class HissunoPlugin(AirflowPlugin):
    """Serves the Hissuno integrations marketplace and its API inside Airflow."""

    name = "hissuno"
    timetables = [StreamTimetable]  # a stream's schedule, shown in words in Airflow's DAG list
    fastapi_apps = [{"app": HissunoASGI(), "url_prefix": MOUNT, "name": "hissuno"}]
    external_views = [
        # Its own item at the top level of Airflow's navigation (not the last entry of Browse).
        {
            "name": "Integrations",
            "href": MOUNT + "/",
            "destination": "nav",
            "nav_top_level": True,
            "url_route": "hissuno",
        },
        # A tab on every DAG's page; Airflow fills in {DAG_ID}. Non-Hissuno DAGs get a short "not ours" note.
        {
            "name": "Hissuno",
            "href": MOUNT + "/dag/{DAG_ID}",
            "destination": "dag",
            "url_route": "hissuno-stream",
        },
    ]
