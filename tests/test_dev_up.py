"""The README's first command, ``python3 dev.py up``, run as a user runs it and stopped with Ctrl-C.

It must bring up Airflow with the provider and its own embedded store, connect the ``sample`` plugin,
get every enabled stream synced without anyone clicking, serve the marketplace behind the promised
admin/admin login, and leave no process behind when interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:300]
    except OSError:
        return f"{pid} (gone)"


def _ours(marker: str) -> list[int]:
    """Live processes whose command line or environment mentions ``marker`` (our temporary state dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if marker.encode() in blob and state != "Z":
            found.append(int(proc.name))
    return found


def _streams(env: dict[str, str]) -> list[dict]:
    raw = subprocess.run([str(BIN / "hissuno"), "connections", "--json"], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    try:
        conns = json.loads(raw)
    except ValueError:
        raise AssertionError(repr(raw)) from None
    if not conns:
        return []
    out = subprocess.run([str(BIN / "hissuno"), "streams", conns[0]["id"], "--json"], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [row for stream in json.loads(out) for row in stream["rows"]]


def test_dev_up_serves_airflow_with_the_sample_plugin_syncing_and_stops_clean(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HISSUNO_", "AIRFLOW"))}
    env.update({"HISSUNO_HOME": str(state), "AIRFLOW_HOME": str(state / "airflow"), "HISSUNO_PORT": str(port)})
    log = tmp_path / "up.log"
    proc = subprocess.Popen([sys.executable, str(REPO / "dev.py"), "up"], cwd=REPO, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        rows: list[dict] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-4000:]
            rows = _streams(env) if (state / "pgdata").exists() else []
            if len(rows) == 5 and all(r["last_sync_status"] == "success" for r in rows):
                break
            time.sleep(3)
        assert len(rows) == 5 and all(r["last_sync_status"] == "success" for r in rows), (
            rows, log.read_text()[-4000:])

        assert httpx.get(f"{url}/hissuno/api/plugins/catalog", timeout=10).status_code == 401
        token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": "admin"},
                           timeout=10).json()["access_token"]
        catalog = httpx.get(f"{url}/hissuno/api/plugins/catalog", headers={"Authorization": f"Bearer {token}"},
                            timeout=10)
        assert catalog.status_code == 200 and "sample" in {p["id"] for p in catalog.json()["plugins"]}
        page = httpx.get(f"{url}/hissuno/", cookies={"_token": token}, timeout=10)
        assert page.status_code == 200 and "Integrations" in page.text
        # The first syncs are reported as they finish (the follower polls every few seconds).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _said(log, "synced ") < 5:
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
        try:
            rc = proc.wait(timeout=90)
        finally:
            leftovers = _ours(str(state))
            described = [_cmdline(pid) for pid in leftovers]
            for pid in leftovers:
                os.kill(pid, signal.SIGKILL)
    assert rc == 0, log.read_text()[-4000:]
    assert leftovers == [], (described, log.read_text()[-3000:])
    _assert_quiet(log.read_text(), state, port)


def _said(log: Path, prefix: str) -> int:
    return sum(1 for line in log.read_text().splitlines() if line.startswith(prefix))


def _assert_quiet(out: str, state: Path, port: int) -> None:
    """A person sees start-up, the URLs, the first syncs and errors; the servers' chatter is in log files."""
    lines = out.splitlines()
    assert f"Airflow: http://127.0.0.1:{port}  (user admin, password admin)" in lines, out[-3000:]
    assert f"Integrations: http://127.0.0.1:{port}/hissuno/" in lines
    assert "preparing Airflow's database ... ok" in lines
    first = [line for line in lines if line.startswith("synced ")]
    assert {line.split()[1].split("/")[1] for line in first} == {
        "sessions", "contacts", "companies", "issues", "knowledge:help-center"}, out[-3000:]
    assert all(": " in line and " synced" in line for line in first)
    # No access log, no scheduler chatter, no warnings about our secrets or connection types.
    assert "http.access" not in out and 'HTTP/1.1"' not in out and "cannot be started" not in out, out[-3000:]
    assert "Skipping masking" not in out
    assert len(lines) < 40, out[-3000:]
    logs = state / "logs"
    assert "[http.access]" in (logs / "api-server.log").read_text()  # kept, where a person can look
    assert (logs / "scheduler.log").stat().st_size > 0 and (logs / "dag-processor.log").stat().st_size > 0
