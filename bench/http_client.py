"""Benchmark: the CPU a request costs through ``ProviderClient`` against a bare ``httpx.Client``.

The Zendesk fake (``tests/fakes/zendesk.py``, in a process of its own on 127.0.0.1) answers the request a
Zendesk sync makes most: one ticket's comments, ``GET /api/v2/tickets/{id}/comments.json?page[size]=100&
sort_order=asc``, kept alive on one connection. Rounds alternate between:

- **bare**: ``httpx.Client(base_url=..., auth=(user, token)).get(path, params=...).json()``, as
  ``sync_throughput.py``'s fetch-only floor pages the data;
- **ours**: ``ProviderClient.get_json(path, params=...)`` with ``BasicAuth`` and the default ``RetryPolicy``
  (status classification, redaction set, the request hook's checks), as a plugin calls it.

Each round times N requests in this process's CPU seconds (the fake's are not counted); the report gives each
side's median per request and their ratio. ``ProviderClient`` keeps no cookies and parses a plain path's URL
once, where httpx's defaults parse every response's cookies and each URL three times: ours may cost less
than bare.

    .venv/bin/python bench/http_client.py [N] [--rounds R]   (default N = 2000, R = 5)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PATH = "/api/v2/tickets/{}/comments.json"
PARAMS = {"page[size]": 100, "sort_order": "asc"}


def main() -> int:
    """Serve the fake, alternate bare and ours for the rounds, print medians and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import httpx

    from hissuno_airflow.kit.http import BasicAuth, ProviderClient
    from tests.fakes.zendesk import ADMIN

    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, str(REPO / "bench" / "sync_throughput.py"), "--child", "serve",
                               "--n", str(args.n)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    try:
        url, token = server.stdout.readline().split()
        user = f"{ADMIN['email']}/token"
        ids = range(1, args.n + 1)

        def bare() -> float:
            with httpx.Client(base_url=url, auth=(user, token), timeout=60) as client:
                c = time.process_time()
                for i in ids:
                    client.get(PATH.format(i), params=PARAMS).json()
                return time.process_time() - c

        def ours() -> float:
            with ProviderClient("zendesk", url, auth=BasicAuth(user, token), timeout=60) as client:
                c = time.process_time()
                for i in ids:
                    client.get_json(PATH.format(i), params=PARAMS)
                return time.process_time() - c

        bare(), ours()  # warm both (imports, the fake's first answers)
        times: dict[str, list[float]] = {"bare": [], "ours": []}
        for _ in range(args.rounds):
            times["bare"].append(bare())
            times["ours"].append(ours())
    finally:
        server.stdin.close()
        server.wait(30)
    per = {k: statistics.median(v) / args.n * 1e6 for k, v in times.items()}
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, httpx {httpx.__version__}, "
          f"{args.n} requests a round, {args.rounds} rounds")
    for k, v in times.items():
        print(f"{k}: median {per[k]:.0f} us of CPU a request (rounds {', '.join(f'{x:.2f}' for x in v)} s)")
    print(f"ratio ours/bare {per['ours'] / per['bare']:.2f}x (ProviderClient's retries, redaction and hooks "
          "against a bare httpx.Client; <= 1.0: the layer costs nothing net)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
