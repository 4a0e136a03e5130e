"""The store a benchmark runs against: ``HISSUNO_DATABASE_URL`` when set, else a throwaway embedded one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


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
            stop_own_store()
            shutil.rmtree(os.environ["HISSUNO_HOME"], ignore_errors=True)  # its data is the run's alone


def stop_own_store() -> None:
    """Stop the embedded PostgreSQL this process started; a server named by ``HISSUNO_DATABASE_URL`` is
    not the benchmark's to stop."""
    if os.environ.get("HISSUNO_DATABASE_URL"):
        return
    from hissuno_airflow.store.db import reset_stores, stop_embedded

    reset_stores()
    stop_embedded()


@contextmanager
def airflow_bench_home() -> Iterator[Path]:
    """A temp folder holding the run's ``HISSUNO_HOME`` and ``AIRFLOW_HOME`` (unless already set), with
    only the sample plugin loaded; afterwards the embedded store is stopped and the folder removed (the
    seeded store and the Airflow home are the run's alone)."""
    tmp = Path(tempfile.mkdtemp(prefix="hissuno-bench-"))
    os.environ.setdefault("HISSUNO_HOME", str(tmp / "hissuno"))
    os.environ.setdefault("AIRFLOW_HOME", str(tmp / "airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("HISSUNO_LOAD_PLUGINS", "sample")
    try:
        yield tmp
    finally:
        stop_own_store()
        shutil.rmtree(tmp, ignore_errors=True)


def server_cpu() -> float | None:
    """CPU seconds of the embedded PostgreSQL: the postmaster, its exited children and its live ones."""
    home = os.environ.get("HISSUNO_HOME")
    if os.environ.get("HISSUNO_DATABASE_URL") or not home:
        return None
    pid = int(Path(home, "pgdata", "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid:
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / tick
