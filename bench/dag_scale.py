"""Benchmark: how the DAG factory's cost grows from 1,000 to 5,000 stream instances.

For each size the store is seeded with that many enabled streams (as ``bench/dag_parse.py`` does) and the
Hissuno DAG file goes through what Airflow does with it, each step timed on its own, in one process:

- **parse**: Airflow's ``DagBag`` over ``dags/hissuno_dags.py`` (the dag-processor's parse of the file; best of
  ``--repeat``);
- **serialize**: the dag-processor's own ``_serialize_dags`` (``DagSerialization.to_dict`` of every DAG);
- **write**: ``update_dag_parsing_results_in_db``, the processor's write of the parse to Airflow's metadata
  database (SQLite under a temp ``AIRFLOW_HOME``), first when every DAG is new, then again unchanged (the
  steady state of every later parse);
- **scheduler query**: ``DagModel.dags_needing_dagruns``, the query the scheduler runs on every loop to find
  DAGs due for a run (best of ``--repeat``).

Prints each time per size and the growth ratio 5000/1000 (5x the DAGs; linear growth is 5x).

    .venv/bin/python bench/dag_scale.py [--sizes 1000 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from dag_parse import _parse, _seed  # noqa: E402
from own_store import airflow_bench_home  # noqa: E402


def _best(fn: Any, repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _measure(size: int, repeat: int) -> dict[str, float]:
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.dag_processing.dagbag import DagBag
    from airflow.dag_processing.processor import _serialize_dags
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    _seed(size)
    path = REPO / "dags" / "hissuno_dags.py"
    _parse(path)  # warm: imports and the manifest's first read are not the parse's growth
    parse, _ = _best(lambda: _parse(path), repeat)
    bag = DagBag(dag_folder=str(path), safe_mode=True)
    assert len(bag.dags) == size, len(bag.dags)
    log = logging.getLogger("bench")
    serialize, (dags, errors) = _best(lambda: _serialize_dags(bag, log), repeat)
    assert not errors, errors
    bundle = "dags-folder"

    def write() -> None:
        with create_session() as session:
            update_dag_parsing_results_in_db(bundle, None, dags, {}, None, set(), session=session,
                                             files_parsed={(bundle, "hissuno_dags.py")})

    t = time.perf_counter()
    write()
    write_new = time.perf_counter() - t
    write_again, _ = _best(write, repeat)

    def due() -> int:
        with create_session() as session:
            rows, _ = DagModel.dags_needing_dagruns(session)
            n = len(list(rows))
            session.rollback()  # the query locks the rows it returns (FOR UPDATE on real databases)
            return n

    query, due_n = _best(due, repeat)
    with create_session() as session:  # the next size's DAGs replace these, as a re-seeded store would
        session.query(DagModel).filter(DagModel.dag_id.in_(list(bag.dags))).update({"is_stale": True})
    return {"parse": parse, "serialize": serialize, "write_new": write_new, "write_again": write_again,
            "query": query, "due": due_n}


def main() -> int:
    """Run the benchmark and print the growth ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False")  # so the query sees them
    # Airflow's default of 30 s is what a 5,000-stream parse exceeded on a loaded 2-core machine: the bench
    # measures the time instead of failing at the limit (the report says how it compares to the default).
    os.environ.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "900")
    with airflow_bench_home():
        env = dict(os.environ, PYTHONPATH=str(REPO))
        subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return _report(args)


def _report(args: argparse.Namespace) -> int:
    logging.getLogger("airflow").setLevel(logging.WARNING)
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()  # the dag-processor does this at start: the DAGs' bundle row
    results = {n: _measure(n, args.repeat) for n in args.sizes}
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, Airflow metadata DB: SQLite,"
          f" load average {os.getloadavg()[0]:.1f}")
    labels = {"parse": "parse (DagBag)", "serialize": "serialize (processor)", "write_new": "DB write, new DAGs",
              "write_again": "DB write, unchanged", "query": "scheduler: dags_needing_dagruns"}
    head = "".join(f"{n:>12}" for n in args.sizes)
    print(f"{'step':34}{head}   growth")
    small, big = args.sizes[0], args.sizes[-1]
    for key, label in labels.items():
        cells = "".join(f"{results[n][key]:11.3f}s" for n in args.sizes)
        print(f"{label:34}{cells}   {results[big][key] / results[small][key]:5.2f}x for {big / small:.0f}x the DAGs")
    print("Airflow's default dagbag_import_timeout is 30 s: a parse near it needs"
          " AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT raised")
    print(f"{'DAGs due in the query':34}" + "".join(f"{int(results[n]['due']):12d}" for n in args.sizes))
    per = {n: sum(results[n][k] for k in ("parse", "serialize", "write_again")) / n * 1000 for n in args.sizes}
    print("per DAG, one parse cycle (parse + serialize + unchanged write): "
          + ", ".join(f"{per[n]:.2f} ms at {n}" for n in args.sizes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
