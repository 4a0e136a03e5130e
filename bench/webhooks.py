"""Benchmark: signed webhook intake vs a bare endpoint, in the same server, in the same run.

Starts the ``hissuno serve`` app on 127.0.0.1 with one extra route, ``POST /bare`` (answers ``{}``
without reading anything), registers a bench plugin (GitHub-style HMAC, connection-scoped URL), and
fires the same number of requests at both with the same client concurrency. Intake is measured
alone: events are verified, deduped and stored, and the inbox is not drained (NullDispatcher).

    .venv/bin/python bench/webhooks.py [--events 2000] [--concurrency 8] [--json]

Prints accepted events per second and p50/p99 latency for both, and the ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

SECRET = "bench-webhook-secret-0123456789"


def _plugin() -> Any:
    from hissuno_airflow.kit import ApiKeyAuth, AuthResult, Icon, Stream, define_plugin
    from hissuno_airflow.kit.signatures import GitHubSignature

    def _test(credentials: dict[str, Any], ctx: Any) -> AuthResult:
        return AuthResult(external_account_id="bench", account_label="bench")

    def _on_event(ctx: Any) -> None:
        """Never called here: the bench measures intake only."""

    return define_plugin(
        id="bench-webhooks", name="Bench", description="webhook intake benchmark", category="issues",
        icon=Icon(), auth=ApiKeyAuth(fields=(), test=_test), webhook_signature=GitHubSignature(),
        streams={"events": Stream(kind="issues", label="Events", webhook=_on_event)},
    )


def _fire(url: str, bodies: list[bytes], headers: list[dict[str, str]], concurrency: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    ok = 0
    lock = threading.Lock()
    idx = iter(range(len(bodies)))

    def worker() -> None:
        nonlocal ok
        mine: list[float] = []
        good = 0
        with httpx.Client(timeout=30) as client:
            while True:
                with lock:
                    i = next(idx, None)
                if i is None:
                    break
                t0 = time.perf_counter()
                r = client.post(url, content=bodies[i], headers=headers[i])
                mine.append(time.perf_counter() - t0)
                good += r.status_code == 200
        with lock:
            latencies.extend(mine)
            ok += good

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, ok


def _stats(elapsed: float, lat: list[float], ok: int) -> dict[str, float]:
    lat = sorted(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return {"accepted": ok, "per_second": ok / elapsed, "p50_ms": statistics.median(lat) * 1000, "p99_ms": p99 * 1000}


def main() -> int:
    """Run the benchmark and print the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request skews the bench
    import os
    import tempfile

    own_server = not os.environ.get("HISSUNO_DATABASE_URL")
    if own_server:  # a throwaway embedded store, never the user's ~/.hissuno
        os.environ["HISSUNO_HOME"] = tempfile.mkdtemp(prefix="hissuno-bench-")
    try:
        return _run(args)
    finally:
        if own_server:
            from hissuno_airflow.store.db import reset_stores, stop_embedded

            reset_stores()
            stop_embedded()


def _run(args: argparse.Namespace) -> int:
    from hissuno_airflow import registry, settings
    from hissuno_airflow.runtime.webhooks import NullDispatcher
    from hissuno_airflow.store import connections as repo
    from hissuno_airflow.store.db import get_store
    from hissuno_airflow.web.serve import Server, build_app

    store = get_store()
    store.migrate()
    registry.register(_plugin(), "bench")
    row, _ = repo.upsert_connection(store, project_id=settings.default_project_id(), plugin_id="bench-webhooks",
                                    external_account_id=f"bench-{time.time_ns()}", account_label="bench",
                                    settings={"webhook_secret": SECRET})
    repo.upsert_stream(store, connection_id=row.id, plugin_id="bench-webhooks", stream_id="events",
                       stream_kind="issues", frequency="webhook")
    app = build_app(token="bench-token-not-used-0123456789", store=store, dispatcher=NullDispatcher())
    app.add_url_rule("/bare", "bare", lambda: ("{}", 200, {"Content-Type": "application/json"}), methods=["POST"])
    server = Server(app).start()
    try:
        n = args.events
        bodies = [json.dumps({"id": i, "action": "opened", "title": f"event {i}", "pad": "x" * 300}).encode()
                  for i in range(n)]
        signed = [{"Content-Type": "application/json", "X-GitHub-Delivery": f"bench-{i}",
                   "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), b, hashlib.sha256).hexdigest()}
                  for i, b in enumerate(bodies)]
        plain = [{"Content-Type": "application/json"}] * n
        base = f"http://127.0.0.1:{server.port}"
        # Warm both paths (imports, pool) before measuring.
        _fire(base + "/bare", bodies[:50], plain[:50], 2)
        warm = [json.dumps({"warm": i}).encode() for i in range(20)]
        _fire(f"{server.url}/api/plugins/webhook/bench-webhooks/{row.id}", warm,
              [{"X-GitHub-Delivery": f"warm-{i}", "X-Hub-Signature-256": "sha256=" + hmac.new(
                  SECRET.encode(), w, hashlib.sha256).hexdigest()} for i, w in enumerate(warm)], 2)
        bare = _stats(*_fire(base + "/bare", bodies, plain, args.concurrency))
        hook = _stats(*_fire(f"{server.url}/api/plugins/webhook/bench-webhooks/{row.id}", bodies, signed,
                             args.concurrency))
        with store.connection() as conn:
            stored = conn.execute("SELECT count(*) AS n FROM webhook_events WHERE connection_id = %s "
                                  "AND stream_id = 'events' AND event_id LIKE 'bench-%%'", (row.id,)).fetchone()["n"]
    finally:
        server.stop()
        repo.delete_connection(store, row.id)
    report = {
        "events": n, "concurrency": args.concurrency, "bare": bare, "webhook": hook, "stored": stored,
        "throughput_ratio": hook["per_second"] / bare["per_second"], "p99_ratio": hook["p99_ms"] / bare["p99_ms"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"signed webhook intake: {hook['per_second']:.0f} events/s, p50 {hook['p50_ms']:.1f} ms, "
              f"p99 {hook['p99_ms']:.1f} ms ({hook['accepted']}/{n} accepted, {stored} stored)")
        print(f"bare endpoint:         {bare['per_second']:.0f} req/s,    p50 {bare['p50_ms']:.1f} ms, "
              f"p99 {bare['p99_ms']:.1f} ms")
        print(f"ratio webhook/bare: throughput {report['throughput_ratio']:.2f}x, p99 {report['p99_ratio']:.2f}x")
    return 0 if hook["accepted"] == n and stored == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
