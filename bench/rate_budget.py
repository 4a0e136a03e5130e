"""Benchmark: what the shared rate budget adds to each provider request, in the same run.

Sends the same GET to a bare local HTTP endpoint through a ``ProviderClient`` three ways: with no budget
(the floor), with this process's ``RateBudget``, and with the store-backed ``SharedRateBudget`` (one
upsert per request in ``rate_budgets``). The budgets' rate is far above what the loop can reach, so
nothing ever waits: what is measured is the booking itself. Then several threads book slots of one
account at once (one row, contended) to show the ledger's own ceiling.

    .venv/bin/python bench/rate_budget.py [--requests 2000] [--threads 4] [--json]

Prints microseconds per request for each, the added cost of the shared budget, and ratios against the
floor. Runs against ``HISSUNO_DATABASE_URL`` when set, else a throwaway embedded store.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.own_store import run_in_store

FAST = 10_000_000.0
"""Requests a minute: no booking ever has to wait, so only its cost shows."""
ROUNDS = 7


class _Bare(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer (headers and body buffered), or delayed ACKs add 40 ms to every request.
    wbufsize = 65536
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def _per_request_us(url: str, limiter: Any, n: int) -> float:
    from hissuno_airflow.kit.http import ProviderClient

    with ProviderClient("bench", url, rate_limiter=limiter) as client:
        for _ in range(20):  # warm the connection and the pool
            client.get_json("/x")
        started = time.perf_counter()
        for _ in range(n):
            client.get_json("/x")
        return (time.perf_counter() - started) / n * 1e6


def _reserve_latencies(ledger: Any, scope: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        ledger.reserve(scope, FAST, FAST)
        out.append((time.perf_counter() - t) * 1e6)
    return out


def _contended(ledger: Any, scope: Any, threads: int, n: int) -> float:
    """Bookings per second of ``threads`` threads on one row."""
    barrier = threading.Barrier(threads + 1)

    def book() -> None:
        barrier.wait()
        for _ in range(n):
            ledger.reserve(scope, FAST, FAST)

    workers = [threading.Thread(target=book) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    return threads * n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    def run() -> None:
        from hissuno_airflow.kit.http import BudgetScope, RateBudget, SharedRateBudget
        from hissuno_airflow.store.db import get_store
        from hissuno_airflow.store.rate_budgets import StoreLedger

        store = get_store()
        store.migrate()
        ledger = StoreLedger(store)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Bare)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_port}"
        try:
            n = args.requests
            limiters = {"floor": None, "local": RateBudget(FAST, burst=FAST),
                        "shared": SharedRateBudget(ledger, BudgetScope("bench", "acct"), FAST, burst=FAST)}
            # Interleaved rounds, median per way: the machine's noise hits all three alike.
            rounds: dict[str, list[float]] = {k: [] for k in limiters}
            for _ in range(ROUNDS):
                for name, limiter in limiters.items():
                    rounds[name].append(_per_request_us(url, limiter, max(1, n // ROUNDS)))
            floor, local, shared = (statistics.median(rounds[k]) for k in ("floor", "local", "shared"))
            lat = sorted(_reserve_latencies(ledger, BudgetScope("bench", "lat"), n))
            per_thread = max(1, n // args.threads)
            contended = _contended(ledger, BudgetScope("bench", "hot"), args.threads, per_thread)
        finally:
            httpd.shutdown()
        result = {
            "requests": n,
            "floor_us": round(floor, 1),
            "local_budget_us": round(local, 1),
            "shared_budget_us": round(shared, 1),
            "shared_added_us": round(shared - floor, 1),
            "ratio_local": round(local / floor, 3),
            "ratio_shared": round(shared / floor, 3),
            "reserve_p50_us": round(statistics.median(lat), 1),
            "reserve_p99_us": round(lat[int(len(lat) * 0.99) - 1], 1),
            "contended_threads": args.threads,
            "contended_bookings_per_s": round(contended),
        }
        if args.json:
            print(json.dumps(result))
            return
        print(f"bare endpoint, no budget:     {floor:8.1f} us/request (floor)")
        print(f"this process's RateBudget:    {local:8.1f} us/request  {local / floor:.3f}x")
        print(f"store-shared budget:          {shared:8.1f} us/request  {shared / floor:.3f}x"
              f"  (+{shared - floor:.1f} us)")
        print(f"one booking alone:            p50 {result['reserve_p50_us']} us, p99 {result['reserve_p99_us']} us")
        print(f"{args.threads} threads on one account:   {contended:8.0f} bookings/s (the ledger's ceiling per account)")

    run_in_store(run)


if __name__ == "__main__":
    main()
