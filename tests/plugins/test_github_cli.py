"""The ``github`` plugin through the real ``hissuno`` CLI in a subprocess: the install URL and the
personal-access-token alternative, enabling a repository's streams, syncing, and a refused token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hissuno_airflow.runtime.connect import finish_callback
from tests.fakes.github import INSTALLATION, FakeGitHub
from tests.plugins import github_env

# The shared fixtures (a conftest here would be shared with every provider's tests).
clock = github_env.clock
gh = github_env.gh


def _cli(database_url: str, home: Any) -> Any:
    # Standalone (no AIRFLOW_HOME): the CLI as used without Airflow; importing Airflow would cost seconds a call.
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_HOME"}
    env.update(HISSUNO_DATABASE_URL=database_url, HISSUNO_HOME=str(home), HISSUNO_CREDENTIALS_BACKEND="db")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", *args], env=env, capture_output=True,
                              text=True, timeout=120)
    return cli


def test_cli_connects_by_token_or_install_and_syncs(store: Any, database_url: str, gh: FakeGitHub,
                                                    tmp_path: Any) -> None:
    cli = _cli(database_url, tmp_path)
    for i in range(3):
        gh.add_issue("acme/web", comments=1 if i == 0 else 0)
    gh.add_issue("acme/web", pull=True)

    refused = cli("connect", "github", "--set", "pat=ghp_not_a_token")
    assert refused.returncode != 0 and "Invalid or expired personal access token" in refused.stderr
    assert "Traceback" not in refused.stderr and "ghp_not_a_token" not in refused.stderr + refused.stdout
    typo = cli("connect", "github", "--set", "token=x")
    assert typo.returncode == 2 and "credentials.token: unknown field; expected pat" in typo.stderr

    pat = gh.add_pat()
    made = cli("connect", "github", "--set", f"pat={pat}", "--json")
    assert made.returncode == 0, made.stderr
    out = json.loads(made.stdout)
    assert out["account_label"] == "dev-dana (PAT)" and pat not in made.stdout + made.stderr
    cid = out["connection_id"]
    assert cli("enable", cid, "feedback:acme/web").returncode == 0
    first = json.loads(cli("sync", cid, "feedback:acme/web", "--json").stdout)
    assert first["status"] == "success" and first["counts"]["synced"] == 3, first
    second = json.loads(cli("sync", cid, "feedback:acme/web", "--json").stdout)
    assert second["status"] == "success" and second["counts"]["synced"] == 0

    # The app: the CLI prints the install URL; GitHub's return (opened by that web user) finishes it.
    started = cli("connect", "github", "--json")
    assert started.returncode == 0, started.stderr
    url = json.loads(started.stdout)["authorize_url"]
    assert url.startswith("https://github.invalid/apps/hissuno-test/installations/new?state=")
    state = parse_qs(urlsplit(url).query)["state"][0]
    back = finish_callback("github", {"state": state, "installation_id": str(INSTALLATION),
                                      "setup_action": "install"}, store, user_id="admin")
    assert back.get("connected") == "1", back
    assert cli("enable", back["connection"], "feedback:acme/web").returncode == 0
    synced = json.loads(cli("sync", back["connection"], "feedback:acme/web", "--json").stdout)
    assert synced["status"] == "success" and synced["counts"]["synced"] == 3 and gh.mints == 1

    # A revoked token: the run fails with what to do, and the connection says reconnect.
    gh.revoke_token(pat)
    failed = cli("sync", cid, "feedback:acme/web")
    assert failed.returncode != 0 and "reconnect" in failed.stdout + failed.stderr
    assert pat not in failed.stdout + failed.stderr
    shown = json.loads(cli("connections", "--plugin", "github", "--json").stdout)
    assert sorted((c["account_label"], c["needs_reconnect"]) for c in shown) == [
        ("acme (App)", False), ("dev-dana (PAT)", True)]
