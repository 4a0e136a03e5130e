"""Benchmark: parse time of the Hissuno airflow DAG file with 1,000 enabled streams vs 1,000 trivial DAGs.

Both files are parsed in the same process with Airflow's own ``DagBag`` (what the dag-processor runs
per file), best of ``--repeat`` runs each. The Hissuno file reads its manifest from a real store
(``HISSUNO_DATABASE_URL``, or an embedded PostgreSQL under a temp ``HISSUNO_HOME``).
Prints both times and the ratio; the target is a ratio of at most 1.5.

    .venv/bin/python bench/dag_parse.py [--streams 1000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from own_store import airflow_bench_home  # noqa: E402

TRIVIAL = '''"""{n} trivial airflow DAGs, one task each (the baseline of bench/dag_parse.py)."""
from datetime import datetime, timedelta
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

for i in range({n}):
    with DAG(dag_id=f"trivial_{{i}}", schedule=timedelta(hours=1), start_date=datetime(2024, 1, 1),
             catchup=False, tags=["bench"]) as dag:
        EmptyOperator(task_id="sync")
'''


def _seed(streams: int) -> None:
    from hissuno_airflow.settings import default_project_id
    from hissuno_airflow.store import connections as repo
    from hissuno_airflow.store.db import get_store

    store = get_store()
    store.migrate()
    with store.connection() as conn:
        conn.execute("DELETE FROM integration_connections WHERE plugin_id = 'sample' AND "
                     "external_account_id LIKE 'bench-%%'")
    freqs = ("1h", "6h", "24h", "manual")
    per_conn = 100
    for c in range(streams // per_conn):
        row, _ = repo.upsert_connection(store, project_id=default_project_id(), plugin_id="sample",
                                        external_account_id=f"bench-{c}", account_label=f"Bench {c}", settings={})
        for s in range(per_conn):
            repo.upsert_stream(store, connection_id=row.id, plugin_id="sample", stream_id=f"knowledge:space-{s}",
                               stream_kind="knowledge", enabled=True, frequency=freqs[s % len(freqs)])


def _parse(path: Path) -> tuple[float, int]:
    from airflow.dag_processing.dagbag import DagBag

    gc.collect()  # the previous bag's garbage is not this parse's cost
    t0 = time.perf_counter()
    bag = DagBag(dag_folder=str(path), safe_mode=True)
    elapsed = time.perf_counter() - t0
    if bag.import_errors:
        sys.exit(f"import errors in {path}: {bag.import_errors}")
    return elapsed, len(bag.dags)


def main() -> int:
    """Run the benchmark and print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with airflow_bench_home() as tmp:
        return _measure(args, tmp)


def _measure(args: argparse.Namespace, tmp: Path) -> int:
    _seed(args.streams)
    trivial = tmp / "trivial_dags.py"
    trivial.write_text(TRIVIAL.format(n=args.streams))
    hissuno = REPO / "dags" / "hissuno_dags.py"
    _parse(trivial), _parse(hissuno)  # warm imports, so neither side pays them
    # Interleaved, best of each: a slow spell of the machine hits both sides alike.
    hissuno_t = trivial_t = float("inf")
    hissuno_n = trivial_n = 0
    for _ in range(args.repeat):
        t, hissuno_n = _parse(hissuno)
        hissuno_t = min(hissuno_t, t)
        t, trivial_n = _parse(trivial)
        trivial_t = min(trivial_t, t)
    ratio = hissuno_t / trivial_t
    print(f"hissuno DAG file: {hissuno_n} DAGs in {hissuno_t:.3f} s")
    print(f"trivial DAG file: {trivial_n} DAGs in {trivial_t:.3f} s")
    print(f"ratio: {ratio:.2f} (target <= 1.5)")
    return 0 if hissuno_n == args.streams and ratio <= 1.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
