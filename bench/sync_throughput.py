"""Benchmark: sync throughput through the whole stack against the provider's fetch-only floor, and peak memory.

For each plugin (``sample``, and ``zendesk`` against its fake ``tests/fakes/zendesk.py`` served on 127.0.0.1 in
a process of its own) and each size (N and N/10), child processes run one after the other: the floor, the
sync, and the floor again (the ratio takes the mean of the two floors, so a drift of the machine's speed
during the run weighs on both sides):

- **floor**: the same data fetched and thrown away. Zendesk: the incremental export paged with a bare
  ``httpx.Client`` (1000 tickets a page, JSON parsed for the cursor), the comments of every ticket the plugin
  ingests, and each requester and organization once, exactly the requests the plugin makes. Sample: the
  plugin's own in-process source (``data.conversations``), which is its "provider".
- **sync**: ``runtime.sync.run_stream_sync`` of the stream into a fresh database (plugin, HTTP client with
  retries and budgets, validation, ingest with content hashes and exactly-once upserts, contacts and
  companies, classification, embeddings and graph links). The time spent inside ``Enricher.run``
  (embedding + graph linking) is measured too, so the ratio is printed with and without enrichment (without:
  the wall time less enrichment's; once the run's ingest worker enriches while the plugin fetches
  (``runtime/ingest_worker.py``), enrichment overlaps the fetch and "without" is only a lower bound).

Each child reports its wall time and its RSS high-water mark (``resource.getrusage``), so the memory of one
run does not leak into the next. The rate budgets the Zendesk plugin keeps for the real service (200 requests
a minute, the export 10 a minute) are lifted for the bench: it measures our cost, not Zendesk's pacing. Only
their rate is lifted: each request still books its slots, in the store's ``rate_budgets`` with the default
``HISSUNO_RATE_BUDGET=shared`` (what a deployment runs, and what the report's first line names), or in the
process with ``process``.
The target is sync/floor <= 1.5, and the peak memory at N about that at N/10 (streaming, not accumulating).

    .venv/bin/python bench/sync_throughput.py [N] [--plugins sample,zendesk]   (default N = 100000)

``BENCH_PROFILE=/tmp/prof`` writes a cProfile of each sync to ``/tmp/prof.<plugin>.<N>``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from own_store import server_cpu  # noqa: E402

EXPORT = "/api/v2/incremental/tickets/cursor.json"


# -- the Zendesk fake, in a process of its own ---------------------------------------------------------


def _serve_zendesk(n: int) -> None:
    """Serve a fake Zendesk with ``n`` tickets; print ``url token`` and serve until stdin closes."""
    from tests.fakes.server import FakeClock, FakeRequest, Reply, get
    from tests.fakes.zendesk import FakeZendesk, _decode, _encode

    class BenchZendesk(FakeZendesk):
        """The fake with its export's sort done once: the data does not change during the bench, and the
        stock fake sorts every ticket on every page (O(N) a page), which would inflate both sides."""

        _rows: list[tuple[int, int, dict[str, Any]]] | None = None

        @get(EXPORT)
        def export(self, req: FakeRequest) -> Reply:
            if self._rows is None:
                self._rows = sorted(((int(self.tickets.stamps[str(t["id"])]), t["id"], t) for t in self.tickets),
                                    key=lambda r: (r[0], r[1]))
            q = req.query
            if "cursor" in q:
                gts, last_id = (int(p) for p in _decode(q["cursor"]))
            else:
                gts, last_id = int(q["start_time"]), -1
            at = bisect.bisect_right(self._rows, (gts, last_id), key=lambda r: (r[0], r[1]))
            size = min(int(q.get("per_page") or 1000), self.max_export_page)
            page = self._rows[at : at + size]
            end = at + size >= len(self._rows)
            pos = (page[-1][0], page[-1][1]) if page else (gts, last_id)
            cursor = _encode(*pos)
            return {"tickets": [{**t, "generated_timestamp": g} for g, _, t in page], "after_cursor": cursor,
                    "before_cursor": None, "end_of_stream": end, "after_url": req.url_for(req.path, cursor=cursor),
                    "before_url": None}

    clock = FakeClock(time.time() - 60 * n - 86_400 * 30)
    fake = BenchZendesk(n, clock=clock.time)
    clock.advance(60 * n + 3600)  # every ticket older than the export's one-minute lag
    fake.requests = _Discard()  # the fake logs every request; a 100k-record run needs no such log
    fake.start()
    print(fake.url, fake.add_token(), flush=True)
    sys.stdin.read()
    fake.stop()


class _Discard(list):  # type: ignore[type-arg]
    def append(self, _item: object) -> None:
        pass


# -- the children --------------------------------------------------------------------------------------


def _time_calls(cls: Any, name: str, record: Any) -> None:
    """Wrap ``cls.name`` so that each call's arguments (``self`` first) and seconds go to ``record``."""
    fn = getattr(cls, name)

    def timed(*args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            record(args, time.perf_counter() - t0)

    setattr(cls, name, timed)


def _append(path: Path, line: str) -> None:
    with path.open("a") as fh:
        fh.write(line + "\n")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _floor(plugin: str, n: int, fake_url: str, token: str) -> dict[str, Any]:
    if plugin == "sample":
        from datetime import UTC, datetime

        from hissuno_airflow.plugins.sample import data

        t, c = time.perf_counter(), time.process_time()
        # The listing streams (a generator): the floor walks it as the sync does.
        got = sum(1 for _ in data.conversations(data.SampleSource("bench-floor", datetime(2020, 1, 1, tzinfo=UTC), 60),
                                                size=n, since=None, until=None))
        return {"wall": time.perf_counter() - t, "cpu": time.process_time() - c, "records": got, "requests": 0}
    import httpx

    from tests.fakes.zendesk import ADMIN, INGESTED

    t, c = time.perf_counter(), time.process_time()
    tickets = requests = 0
    seen_users: set[Any] = set()
    seen_orgs: set[Any] = set()
    with httpx.Client(base_url=fake_url, auth=(f"{ADMIN['email']}/token", token), timeout=60) as client:
        params: dict[str, Any] = {"start_time": 0, "per_page": 1000}
        while True:
            page = client.get(EXPORT, params=params).json()
            requests += 1
            for ticket in page["tickets"]:
                tickets += 1
                if ticket["status"] not in INGESTED:
                    continue
                client.get(f"/api/v2/tickets/{ticket['id']}/comments.json",
                           params={"page[size]": 100, "sort_order": "asc"}).json()
                requests += 1
                if ticket["requester_id"] not in seen_users:
                    seen_users.add(ticket["requester_id"])
                    user = client.get(f"/api/v2/users/{ticket['requester_id']}.json").json()["user"]
                    requests += 1
                    org = user.get("organization_id") or ticket.get("organization_id")
                    if org is not None and org not in seen_orgs:
                        seen_orgs.add(org)
                        client.get(f"/api/v2/organizations/{org}.json").json()
                        requests += 1
            if page["end_of_stream"]:
                break
            params = {"cursor": page["after_cursor"], "per_page": 1000}
    return {"wall": time.perf_counter() - t, "cpu": time.process_time() - c, "records": tickets,
            "requests": requests}


def _sync(plugin: str, n: int, fake_url: str, token: str) -> dict[str, Any]:
    from hissuno_airflow import registry, settings
    from hissuno_airflow.runtime.credentials import credential_store
    from hissuno_airflow.runtime.streams import enable_stream
    from hissuno_airflow.runtime.sync import run_stream_sync
    from hissuno_airflow.store import connections as repo
    from hissuno_airflow.store.db import get_store
    from hissuno_airflow.store.enrich import Enricher

    store = get_store(os.environ["HISSUNO_DATABASE_URL"])
    from hissuno_airflow.store.ingest import StreamIngest

    # Enrichment and batch writes run in the run's ingest worker once the run is large
    # (runtime/ingest_worker.py): each call appends its seconds to a file, so both processes' are counted.
    enrich_log = Path(tempfile.gettempdir(), f"hissuno-bench-enrich-{os.getpid()}")
    flush_log = Path(tempfile.gettempdir(), f"hissuno-bench-flush-{os.getpid()}")
    for log in (enrich_log, flush_log):
        log.write_text("")
    _time_calls(Enricher, "run", lambda _a, s: _append(enrich_log, f"{s}"))
    _time_calls(StreamIngest, "_flush_once", lambda _a, s: _append(flush_log, f"{s}"))
    if os.environ.get("BENCH_ENRICH_PARTS"):  # where enrichment's time goes, by phase, to that file
        parts_log = Path(os.environ["BENCH_ENRICH_PARTS"])
        for phase in ("_build_indexes", "_link", "_link_emails", "_embed_and_write"):
            _time_calls(Enricher, phase, lambda a, s, _p=phase: _append(
                parts_log, f"{_p} {len(a[1]) if len(a) > 1 and hasattr(a[1], '__len__') else '-'} {s:.3f}"))
    p = registry.get_plugin(plugin)
    if plugin == "sample":
        auth = p.auth.test({"workspace": "bench-" + uuid.uuid4().hex[:8], "epoch": "2020-01-01T00:00:00+00:00",
                            "every_seconds": 60}, None)
        row, _ = repo.upsert_connection(store, project_id=settings.default_project_id(), plugin_id="sample",
                                        external_account_id=auth.external_account_id,
                                        account_label=auth.account_label, settings=None)
        credential_store(store, "db").save(row, auth.credentials)
        cid, stream, filters = row.id, "sessions", {"size": n}
    else:
        from hissuno_airflow.kit.http import NamedBudget
        from hissuno_airflow.runtime import services
        from tests.fakes.zendesk import connect

        os.environ["HISSUNO_ZENDESK_API_URL"] = fake_url
        cid, stream, filters = connect(store, token), "tickets", None
        # Lift the real service's pacing (see the module docstring), but keep the budget machinery: each
        # budget (the account's and the export's) is still booked per request, in the store when the
        # scope is ``shared`` (HISSUNO_RATE_BUDGET; the default, and what a deployment runs).
        named = services.named_budget

        def lifted(plugin_id: str, account: str, spec: NamedBudget, *, store: Any = None) -> Any:
            return named(plugin_id, account, NamedBudget(spec.name, 1e9, burst=1e9), store=store)

        services.named_budget = lifted  # type: ignore[assignment]
    enable_stream(store, cid, stream, filters=filters)
    if os.environ.get("BENCH_TRACEMALLOC"):  # where the sync's memory is at its end, for a growing peak
        import tracemalloc

        tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "12")))
    prof = None
    if os.environ.get("BENCH_PROFILE"):  # a cProfile of the sync, written where the variable says
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    # How long the run waited for its ingest worker: while the plugin fetched (the worker behind by
    # ``AHEAD_BYTES``), and at the end (the last batches and enrichment pass).
    from hissuno_airflow.runtime.ingest_worker import IngestPipe

    waits = {"fetching": 0.0, "close": 0.0}
    for name, key in (("_pump", "fetching"), ("close", "close")):
        def waited(a: tuple[Any, ...], s: float, _k: str = key) -> None:
            if a[0].pid is not None:  # the pipe's own process, not its worker's
                waits[_k] += s
        _time_calls(IngestPipe, name, waited)
    t, c = time.perf_counter(), time.process_time()
    w0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_stream_sync(cid, stream, store=store)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    w1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run's ingest worker, reaped by the run
    worker_cpu = (w1.ru_utime - w0.ru_utime) + (w1.ru_stime - w0.ru_stime)
    enrich_s = sum(float(x) for x in enrich_log.read_text().split())
    enrich_log.unlink()
    flushes = [float(x) for x in flush_log.read_text().split()]
    flush_log.unlink()
    if os.environ.get("BENCH_TRACEMALLOC"):
        snap = tracemalloc.take_snapshot()
        top = snap.statistics("traceback")[:12]
        now_mb, peak_mb = (v / 1e6 for v in tracemalloc.get_traced_memory())
        Path(f"{os.environ['BENCH_TRACEMALLOC']}.{plugin}.{n}").write_text(
            f"Python objects: {now_mb:.1f} MB at the end, {peak_mb:.1f} MB at the peak\n\n"
            + "\n\n".join(f"{st.size / 1e6:.1f} MB in {st.count} blocks\n" + "\n".join(st.traceback.format()[-12:])
                          for st in top))
    if prof is not None:
        prof.disable()
        prof.dump_stats(f"{os.environ['BENCH_PROFILE']}.{plugin}.{n}")
    assert result.status == "success", result
    return {"wall": wall, "cpu": cpu + worker_cpu, "worker_cpu": worker_cpu, "enrich": enrich_s,
            "records": result.counts.get("synced", 0), "counts": result.counts, "waits": waits, "flush_s": sum(flushes), "flushes": len(flushes),
            "worker_peak_mb": w1.ru_maxrss / 1024 if worker_cpu else 0.0}


def _child(args: argparse.Namespace) -> None:
    if args.child == "serve":
        _serve_zendesk(args.n)
        return
    fn = _floor if args.child == "floor" else _sync
    out = fn(args.plugin, args.n, args.fake_url or "", args.token or "")
    out["peak_mb"] = _peak_mb()
    out["sys_s"] = resource.getrusage(resource.RUSAGE_SELF).ru_stime  # the kernel's share (sockets, pipes, faults)
    print("RESULT " + json.dumps(out), flush=True)


# -- the parent -----------------------------------------------------------------------------------------


def _run_child(kind: str, plugin: str, n: int, env: dict[str, str], fake: tuple[str, str] | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--plugin", plugin, "--n", str(n)]
    if fake:
        cmd += ["--fake-url", fake[0], "--token", fake[1]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.exit(f"{kind} {plugin} {n} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return dict(json.loads(line[7:]))


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of a live process; 0 for none."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fresh_db(base_url: str) -> str:
    import psycopg

    from hissuno_airflow.store.db import get_store

    name = "bench_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = base_url.replace("/hissuno?", f"/{name}?")
    get_store(url).migrate()
    return url


def _measure(plugin: str, n: int, base_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = None
    fake = None
    try:
        if plugin == "zendesk":
            server = subprocess.Popen([sys.executable, __file__, "--child", "serve", "--n", str(n)], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert server.stdout is not None
            url, token = server.stdout.readline().split()
            fake = (url, token)
        fake_pid = server.pid if server is not None else None
        f0 = _proc_cpu(fake_pid)
        before = _run_child("floor", plugin, n, env, fake)
        f1 = _proc_cpu(fake_pid)
        env["HISSUNO_DATABASE_URL"] = _fresh_db(base_url)
        s0 = server_cpu()
        sync = _run_child("sync", plugin, n, env, fake)
        f2, s1 = _proc_cpu(fake_pid), server_cpu()
        after = _run_child("floor", plugin, n, env, fake)
        f3 = _proc_cpu(fake_pid)
        # The floor is measured on both sides of the sync and averaged: this machine's speed drifts by a
        # third within minutes (one floor read 42 s, the next 17 s), and a single floor taken before the
        # sync made the ratio follow that drift more than the sync.
        floor = {**before, "wall": (before["wall"] + after["wall"]) / 2, "walls": (before["wall"], after["wall"]),
                 "cpu": (before["cpu"] + after["cpu"]) / 2, "sys_s": (before["sys_s"] + after["sys_s"]) / 2, "peak_mb": max(before["peak_mb"], after["peak_mb"])}
        # CPU seconds of everything each side made work: the child, the fake, and (sync) PostgreSQL.
        floor["cpu_all"] = floor["cpu"] + ((f1 - f0) + (f3 - f2)) / 2
        sync["cpu_all"] = sync["cpu"] + f2 - f1 + ((s1 - s0) if s0 is not None and s1 is not None else 0.0)
    finally:
        if server is not None:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(30)
    return floor, sync


def main() -> int:
    """Parse arguments; a child does its one job, the parent runs them all and prints the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", type=int, nargs="?", default=100_000)
    ap.add_argument("--plugins", default="sample,zendesk")
    ap.add_argument("--child", choices=("serve", "floor", "sync"))
    ap.add_argument("--plugin")
    ap.add_argument("--n", type=int)
    ap.add_argument("--fake-url")
    ap.add_argument("--token")
    args = ap.parse_args()
    if args.child:
        _child(args)
        return 0
    from own_store import run_in_store

    status = [0]

    def run() -> None:
        from hissuno_airflow.store.db import resolve_url

        status[0] = _report(args, resolve_url())

    run_in_store(run)
    return status[0]


def _report(args: argparse.Namespace, base_url: str) -> int:
    n = args.records
    from hissuno_airflow import settings

    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f},"
          f" rate budgets {settings.rate_budget_scope()} (HISSUNO_RATE_BUDGET)", flush=True)
    ok = True
    for plugin in args.plugins.split(","):
        peaks = {}
        for size in (max(1, n // 10), n):
            floor, sync = _measure(plugin, size, base_url)
            # The run's process and its ingest worker's, added: pages the fork shares count twice (an upper bound).
            peaks[size] = sync["peak_mb"] + sync["worker_peak_mb"]
            ratio = sync["wall"] / floor["wall"]
            bare = (sync["wall"] - sync["enrich"]) / floor["wall"]
            print(f"{plugin} {size:>7} records: floor {floor['wall']:7.2f} s (mean of {floor['walls'][0]:.2f} s before"
                  f" and {floor['walls'][1]:.2f} s after the sync; {floor['requests']} requests,"
                  f" peak {floor['peak_mb']:.0f} MB) | sync {sync['wall']:7.2f} s"
                  f" ({sync['records'] / sync['wall']:.0f} records/s; enrichment {sync['enrich']:.2f} s),"
                  f" peak {peaks[size]:.0f} MB (run {sync['peak_mb']:.0f} + ingest worker {sync['worker_peak_mb']:.0f})",
                  flush=True)
            print(f"{plugin} {size:>7} records: ratio sync/floor {ratio:6.2f}x with enrichment,"
                  f" {bare:6.2f}x without{' (a lower bound: enrichment overlaps the fetch)' if sync['worker_cpu'] else ''}"
                  " (target <= 1.5)", flush=True)
            print(f"{plugin} {size:>7} records: CPU seconds floor {floor['cpu_all']:.1f} (client {floor['cpu']:.1f},"
                  f" in the kernel {floor['sys_s']:.1f}), sync {sync['cpu_all']:.1f}"
                  f" (client {sync['cpu']:.1f}, of it the ingest worker {sync['worker_cpu']:.1f} and the kernel"
                  f" {sync['sys_s']:.1f} for the run's process;"
                  f" the rest fake + PostgreSQL):"
                  f" {sync['cpu_all'] / floor['cpu_all']:.2f}x", flush=True)
            if sync["waits"]["close"] or sync["waits"]["fetching"]:
                print(f"{plugin} {size:>7} records: the run waited for its ingest worker"
                      f" {sync['waits']['fetching']:.2f} s while fetching and {sync['waits']['close']:.2f} s"
                      f" at the end; its batch writes took {sync['flush_s']:.2f} s ({sync['flushes']} batches)",
                      flush=True)
            # Busy cores on average (CPU seconds of every process over the wall time): the wall ratio is the
            # CPU ratio times floor/sync parallelism, so this says whether the sync is slow for the work it
            # does or for doing it one process at a time.
            if plugin == "zendesk":
                print(f"{plugin} {size:>7} records: parallelism (busy cores) floor {floor['cpu_all'] / floor['wall']:.2f},"
                      f" sync {sync['cpu_all'] / sync['wall']:.2f} of {os.cpu_count()}", flush=True)
            ok = ok and ratio <= 1.5
        small, big = sorted(peaks)
        growth = peaks[big] / peaks[small]
        print(f"{plugin} peak memory: {peaks[small]:.0f} MB at {small}, {peaks[big]:.0f} MB at {big}:"
              f" {growth:.2f}x for {big // small}x the records (flat: <= 1.25x)", flush=True)
        ok = ok and growth <= 1.25
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
