"""The code standards as tests: ruff-clean everywhere, mypy --strict clean on the whole package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_clean():
    proc = _run("ruff", "check", "hissuno_airflow", "tests", "bench", "dags", "dev.py")
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_mypy_strict_clean():
    proc = _run("mypy", "hissuno_airflow")
    assert proc.returncode == 0, proc.stdout[-4000:]
