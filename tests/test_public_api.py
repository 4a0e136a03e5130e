"""The kit's public surface: sorted, importable, and free of Airflow and database imports."""

from __future__ import annotations

import subprocess
import sys

import hissuno_airflow.kit as kit


def test_all_is_sorted_and_complete():
    assert kit.__all__ == sorted(kit.__all__)
    public = {n for n in dir(kit) if not n.startswith("_")} - {
        "annotations", "auth", "context", "define", "errors", "records", "streams", "types", "redaction", "http",
        "signatures", "testing", "github_app", "urls", "input_limits", "knowledge",
    }
    assert public == set(kit.__all__)


def test_every_name_imports():
    for name in kit.__all__:
        assert getattr(kit, name) is not None


def test_kit_imports_no_airflow_or_driver():
    code = (
        "import sys, hissuno_airflow.kit, hissuno_airflow.kit.http, hissuno_airflow.kit.testing, hissuno_airflow.kit.signatures, hissuno_airflow.kit.github_app, hissuno_airflow.plugins.sample.plugin;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('airflow','psycopg','psycopg_pool','flask','sqlalchemy')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
