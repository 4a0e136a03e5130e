"""The store a benchmark runs against: ``HISSUNO_DATABASE_URL`` when set, else a throwaway embedded one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable


def run_in_store(run: Callable[[], None]) -> None:
    """Call ``run`` with the store configured; an embedded server started for it is stopped afterwards.

    Without ``HISSUNO_DATABASE_URL`` the run gets a fresh ``HISSUNO_HOME`` in a temp folder, so a benchmark
    never touches a developer's data and always starts from empty tables.
    """
    own_server = not os.environ.get("HISSUNO_DATABASE_URL")
    if own_server:
        os.environ["HISSUNO_HOME"] = tempfile.mkdtemp(prefix="hissuno-bench-")
    try:
        run()
    finally:
        if own_server:
            from hissuno_airflow.store.db import reset_stores, stop_embedded

            reset_stores()
            stop_embedded()
