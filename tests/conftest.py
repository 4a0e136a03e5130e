"""Test session set-up: isolated HISSUNO_HOME and AIRFLOW_HOME, set before anything imports Airflow."""

from __future__ import annotations

import os
import tempfile

_ROOT = tempfile.mkdtemp(prefix="hissuno-tests-")
os.environ.setdefault("HISSUNO_HOME", os.path.join(_ROOT, "hissuno"))
os.environ.setdefault("AIRFLOW_HOME", os.path.join(_ROOT, "airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
os.environ.setdefault("HISSUNO_SECRET_KEY", "test-secret-key-for-hissuno-0123456789")
os.environ.setdefault("HISSUNO_CREDENTIALS_BACKEND", "db")

pytest_plugins = (
    "tests.fixtures.store",
    "tests.fixtures.fakes",
    "tests.fixtures.airflow",
    "tests.fixtures.airflow_stack",
    "tests.fixtures.web",
)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _one_host_per_test():
    """Whatever a test installs (an in-process CLI call installs the Airflow host when the test Airflow is
    usable) is undone afterwards, with the webhook dispatcher chosen from it."""
    from hissuno_airflow.runtime.host import current_host, install_host
    from hissuno_airflow.runtime.webhooks import set_default_dispatcher

    previous = current_host()
    yield
    install_host(previous)
    set_default_dispatcher(None)
