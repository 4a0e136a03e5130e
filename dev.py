#!/usr/bin/env python3
"""Set up and run hissuno-airflow from a fresh clone with nothing but Python 3.11+.

    python3 dev.py up     # Airflow (API server, scheduler, DAG processor) + the embedded store +
                          # the sample plugin connected and syncing, on http://127.0.0.1:8080
    python3 dev.py test   # the whole test suite (what CI runs)

Both create ``.venv`` on first use and install the package with the pinned ``constraints.txt``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STATE = ROOT / ".hissuno"


def _run(*cmd: str, env: dict[str, str] | None = None, check: bool = True) -> int:
    return subprocess.run(cmd, cwd=ROOT, env=env, check=check).returncode


def _step(title: str, log: Path, *cmd: str, env: dict[str, str]) -> None:
    """Run a set-up step with its output in ``log``; print one line, or the log's tail when it fails."""
    print(f"{title} ...", end=" ", flush=True)
    with log.open("a") as out:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        print("failed", flush=True)
        sys.stdout.write("".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:]))
        sys.exit(f"{title} failed (exit {rc}); the whole output is in {log}")
    print("ok", flush=True)


# What a person should see from the servers: errors. Everything else stays in the log files.
_ALARMS = ("ERROR", "CRITICAL", "[error", "[critical", "Traceback")


def _echo_errors(name: str, log: Path, stop: threading.Event) -> None:
    """Follow a server's log file and echo its error lines (a shortened first line of each)."""
    with log.open("r", errors="replace") as f:
        f.seek(0, os.SEEK_END)
        while not stop.is_set():
            line = f.readline()
            if not line:
                stop.wait(0.5)
                continue
            if any(a in line for a in _ALARMS):
                text = line.strip()
                print(f"[{name}] {text[:300]}{' ...' if len(text) > 300 else ''}  (see {log})", flush=True)


def ensure_venv() -> None:
    """Create .venv and install the package when the pins changed since the last install."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be started by an older python3
        sys.exit("hissuno-airflow needs Python 3.11 or newer")
    stamp = VENV / ".hissuno-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "constraints.txt").read_bytes())
    want = digest.hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing hissuno-airflow and its pinned dependencies ...", flush=True)
    _run(str(BIN / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip", "uv")
    _run(str(BIN / "uv"), "pip", "install", "-q", "--python", str(BIN / "python"), "-c", "constraints.txt",
         "-e", ".[dev]")
    stamp.write_text(want)


def base_env() -> dict[str, str]:
    """Environment of the product: everything under ./.hissuno, loopback only."""
    env = dict(os.environ)
    env.setdefault("HISSUNO_HOME", str(STATE))
    env.setdefault("AIRFLOW_HOME", str(STATE / "airflow"))
    env.setdefault("HISSUNO_CREDENTIALS_BACKEND", "airflow")
    env.update({
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": env.get("HISSUNO_PORT", "8080"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{env.get('HISSUNO_PORT', '8080')}/execution/",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        # Airflow warns that "hissuno_<plugin>" connection types (fixed by the contract) "shall not
        # contain '_'" each time a server process reads one (see airflow_host/names.py).
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS": " ".join(filter(None, [
            env.get("AIRFLOW__LOGGING__NAMESPACE_LEVELS", ""), "airflow.models.connection=ERROR"])),
        "HISSUNO_PUBLIC_URL": f"http://127.0.0.1:{env.get('HISSUNO_PORT', '8080')}/hissuno",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_store(env: dict[str, str]) -> None:
    """Stop the embedded store; once more if its server outlived the first stop (seen under heavy load)."""
    pid_file = Path(env["HISSUNO_HOME"]) / "pgdata" / "postmaster.pid"
    for _ in range(3):
        subprocess.run([str(BIN / "python"), "-c", "from hissuno_airflow.store.db import stop_embedded; stop_embedded()"],
                       cwd=ROOT, env=env, check=False)
        if not pid_file.exists():
            return
        time.sleep(3)
    print(f"the embedded store did not stop; its server is still running ({pid_file})", flush=True)


def cmd_up() -> int:
    """Migrate, connect the sample plugin, enable its streams, and run Airflow until Ctrl-C (or SIGTERM)."""
    ensure_venv()
    signal.signal(signal.SIGTERM, _stop)
    env = base_env()
    Path(env["HISSUNO_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow_home = Path(env["AIRFLOW_HOME"])
    airflow_home.mkdir(parents=True, exist_ok=True)
    passwords = airflow_home / "passwords.json"
    if not passwords.exists():
        passwords.write_text('{"admin": "admin"}')
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(passwords)
    # Quiet by default: the servers' output (access log, scheduler chatter) goes to files under .hissuno/logs.
    logs = Path(env["HISSUNO_HOME"]) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    setup_log = logs / "setup.log"
    _step("preparing Airflow's database", setup_log, str(BIN / "airflow"), "db", "migrate", env=env)
    _step("preparing the Hissuno store", setup_log, str(BIN / "hissuno"), "db", "migrate", env=env)
    _step("connecting the sample plugin", setup_log, str(BIN / "python"), "-m", "hissuno_airflow.devsetup", env=env)
    servers = {
        "api-server": [str(BIN / "airflow"), "api-server", "-H", "127.0.0.1", "-p", env["AIRFLOW__API__PORT"]],
        "scheduler": [str(BIN / "airflow"), "scheduler", "--skip-serve-logs"],
        "dag-processor": [str(BIN / "airflow"), "dag-processor"],
    }
    procs = []
    stop = threading.Event()
    for name, cmd in servers.items():
        log = logs / f"{name}.log"
        log.touch()
        follower = threading.Thread(target=_echo_errors, args=(name, log, stop), daemon=True)
        follower.start()
        time.sleep(0.1)  # the follower is at the end of the file before the server writes to it
        with log.open("a") as out:
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    # First syncs run as soon as the DAG processor has written each stream's DAG (their first run is due
    # at once); this prints each stream's first sync and every failed run as they finish.
    procs.append(subprocess.Popen([str(BIN / "python"), "-m", "hissuno_airflow.devsetup", "--follow"], cwd=ROOT,
                                  env=env, start_new_session=True))
    url = f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}"
    print(f"\nAirflow: {url}  (user admin, password admin)\nIntegrations: {url}/hissuno/\n"
          f"Server logs: {logs}/\nCtrl-C stops everything.\n", flush=True)
    try:
        while all(p.poll() is None for p in procs[:3]):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C or SIGTERM must not cut the shutdown short and orphan servers.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop.set()
        print("stopping ...", flush=True)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        _stop_store(env)
    return 0


def cmd_test(args: list[str]) -> int:
    """Run the whole suite (pytest exit 5, 'no tests', counts as failure)."""
    ensure_venv()
    if shutil.which("chromium") is None and Path("/usr/bin/chromium").exists() is False:
        subprocess.run(["bash", str(ROOT / ".ci" / "setup-browser.sh")], check=False)
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return _run(str(BIN / "python"), "-m", "pytest", *args, env=env, check=False)


def main() -> int:
    """Dispatch ``up`` or ``test``."""
    if len(sys.argv) < 2 or sys.argv[1] not in ("up", "test"):
        print(__doc__)
        return 2
    if sys.argv[1] == "up":
        return cmd_up()
    return cmd_test(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
