"""Benchmark: a first sync of the ``sample`` plugin's sessions stream into an empty store, at several sizes.

Each size runs ``runtime.sync.run_stream_sync`` end to end (plugin, ingest, contacts and companies,
classification, embeddings, graph linking) against a fresh database that has never seen data, so the
planner has no statistics, exactly like a user's first sync. It prints sessions/second per size and the
time ratio of each size against the smallest (linear: 4x the records at most 5x the time), plus the
machine load, since absolute numbers depend on what else runs on the cores, and the CPU seconds the sync
used (this process plus the embedded PostgreSQL's processes): on a shared machine, sessions per CPU-second
is the number that does not move with the neighbours' load.
Usage: ``python bench/first_sync.py [N ...]`` (default 1000 4000; the issue's target is 20000 at
>= 1,000 sessions/s). ``--profile N`` prints a cProfile of one first sync of N sessions instead.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

from own_store import run_in_store, server_cpu

PROJECT = "00000000-0000-0000-0000-000000000001"


def _fresh_store(base_url: str) -> object:
    import psycopg

    from hissuno_airflow.store.db import get_store

    name = "bench_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = base_url.replace("/hissuno?", f"/{name}?")
    store = get_store(url)
    store.migrate()
    return store


def _first_sync(store: object, n: int) -> tuple[float, dict[str, int]]:
    from hissuno_airflow import registry, settings
    from hissuno_airflow.runtime.credentials import credential_store
    from hissuno_airflow.runtime.streams import enable_stream
    from hissuno_airflow.runtime.sync import run_stream_sync
    from hissuno_airflow.store import connections as repo

    plugin = registry.get_plugin("sample")
    workspace = "bench-" + uuid.uuid4().hex[:8]
    auth = plugin.auth.test({"workspace": workspace, "epoch": "2020-01-01T00:00:00+00:00",
                             "every_seconds": 60}, None)
    row, _ = repo.upsert_connection(store, project_id=settings.default_project_id(), plugin_id="sample",
                                    external_account_id=auth.external_account_id,
                                    account_label=auth.account_label, settings=None)
    credential_store(store, "db").save(row, auth.credentials)
    enable_stream(store, row.id, "sessions", filters={"size": n})
    t = time.perf_counter()
    result = run_stream_sync(row.id, "sessions", store=store)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t
    assert result.status == "success", result
    assert result.counts["synced"] == n, result.counts
    return elapsed, result.counts


def main() -> None:
    args = sys.argv[1:]
    profile = args[:1] == ["--profile"]
    sizes = [int(a) for a in (args[1:] if profile else args)] or ([4000] if profile else [1000, 4000])

    def run() -> None:
        from hissuno_airflow.store.db import resolve_url

        base_url = resolve_url()
        if profile:
            _profile(base_url, sizes[0])
        else:
            _run(base_url, sizes)

    run_in_store(run)


def _profile(base_url: str, n: int) -> None:
    import cProfile
    import pstats

    store = _fresh_store(base_url)
    prof = cProfile.Profile()
    prof.enable()
    elapsed, _ = _first_sync(store, n)
    prof.disable()
    print(f"first sync of {n} sessions: {elapsed:.2f} s ({n / elapsed:.0f} sessions/s)")
    pstats.Stats(prof).sort_stats(os.environ.get("SORT", "cumulative")).print_stats(35)


def _run(base_url: str, sizes: list[int]) -> None:
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    times: dict[int, float] = {}
    for n in sizes:
        store = _fresh_store(base_url)
        cpu0, srv0 = time.process_time(), server_cpu()
        times[n], _ = _first_sync(store, n)
        cpu, srv1 = time.process_time() - cpu0, server_cpu()
        line = f"first sync {n:>6} sessions: {times[n]:8.2f} s  {n / times[n]:8.0f} sessions/s  | CPU client {cpu:6.1f} s"
        if srv0 is not None and srv1 is not None:
            line += f", server {srv1 - srv0:6.1f} s: {n / (cpu + srv1 - srv0):6.0f} sessions per CPU-second"
        print(line, flush=True)
    base = sizes[0]
    for n in sizes[1:]:
        print(f"ratio time({n})/time({base}) = {times[n] / times[base]:6.2f} for {n / base:.0f}x the records"
              f"  (linear: <= {1.25 * n / base:.1f})")
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
