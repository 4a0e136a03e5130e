"""The ``github`` plugin's ``codebase`` stream: the branch's tree through the API, include/exclude globs,
text files chunked and embedded, one knowledge source per repository updated in place, and only changed
files (by blob SHA) fetched and embedded again."""

from __future__ import annotations

from typing import Any

from hissuno_airflow.plugins.github.codebase import matches
from hissuno_airflow.runtime.sync import run_stream_sync
from tests.fakes.github import FakeGitHub, blob_sha
from tests.plugins import github_env
from tests.plugins.github_env import enable, one, rows

CODEBASE = "codebase:acme/api"
LONG = "\n\n".join(f"## Section {i}\n\n" + ("Exports are written in batches of a thousand rows. " * 12)
                   for i in range(6))
FILES: dict[str, str | bytes] = {
    "README.md": "# API\n\n" + LONG,
    "src/app.py": "# a comment, not a heading\nimport csv\n\n\ndef export(rows):\n    return csv.writer(rows)\n",
    "src/util/strings.py": "def slug(s):\n    return s.lower()\n",
    "src/vendor/lib.js": "module.exports = 1\n",
    "docs/guide.md": "# Guide\n\nRun the exporter.\n",
    "assets/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00binary",
    "data/blob.txt": b"text with a \x00 NUL byte",
    "tests/test_app.py": "def test_export():\n    assert True\n",
}
SETTINGS = {"include_globs": ["src/**", "*.md", "data/**"], "exclude_globs": ["**/vendor/**"]}
"""Read: README.md, docs/guide.md, src/app.py, src/util/strings.py (data/blob.txt is binary)."""


def _bytes(path: str) -> bytes:
    data = FILES[path]
    return data.encode() if isinstance(data, str) else data

# The shared fixtures (a conftest here would be shared with every provider's tests).
app = github_env.app
clock = github_env.clock
gh = github_env.gh


def _sources(store: Any) -> dict[str, dict[str, Any]]:
    found = rows(store, "SELECT r.external_id, k.* FROM knowledge_sources k JOIN integration_synced_records r"
                        " ON r.hissuno_id = k.id WHERE r.stream_id = %s AND k.deleted_at IS NULL", CODEBASE)
    return {r["external_id"]: r for r in found}


def _embedded_chunks(store: Any) -> int:
    return int(one(store, "SELECT count(*) FROM embeddings WHERE entity_type = 'knowledge_chunk'"))


def test_globs_match_paths_as_documented() -> None:
    assert matches("src/a/b.py", ["src/**"]) and matches("README.md", ["*.md"]) and matches("docs/x.md", ["*.md"])
    assert matches("a/vendor/x.js", ["**/vendor/**"]) and matches("vendor/x.js", ["**/vendor/**"])
    assert not matches("srcx/a.py", ["src/**"]) and not matches("src/a.py", ["src/*.js"])


def test_first_sync_walks_the_tree_applies_globs_and_embeds_text_files(store: Any, gh: FakeGitHub, app: str) -> None:
    gh.push("acme/api", FILES)
    enable(store, app, CODEBASE, filters=SETTINGS)

    result = run_stream_sync(app, CODEBASE, store=store)

    assert result.status == "success", result.error
    sources = _sources(store)
    paths = {s["name"] for k, s in sources.items() if k != "acme/api"}
    assert paths == {"README.md", "docs/guide.md", "src/app.py", "src/util/strings.py"}
    repo = sources["acme/api"]
    assert repo["type"] == "codebase" and repo["origin"] == "github_sync" and repo["parent_id"] is None
    assert repo["custom_fields"]["branch"] == "main" and repo["url"] == "https://github.invalid/acme/api"
    assert "- src/app.py" in repo["content"] and "vendor" not in repo["content"]
    app_py = next(s for s in sources.values() if s["name"] == "src/app.py")
    assert app_py["parent_id"] == repo["id"] and app_py["status"] == "done"
    assert app_py["custom_fields"]["blob_sha"] == blob_sha(_bytes("src/app.py"))
    assert app_py["url"] == "https://github.invalid/acme/api/blob/main/src/app.py"
    # Code is fenced, so its '#' lines are not headings; the README is chunked by its own headings.
    assert "```py\n# a comment, not a heading" in app_py["content"]
    readme_chunks = one(store, "SELECT count(*) FROM knowledge_chunks WHERE source_id = %s",
                        next(s["id"] for s in sources.values() if s["name"] == "README.md"))
    assert readme_chunks >= 6
    assert _embedded_chunks(store) == one(store, "SELECT count(*) FROM knowledge_chunks")
    # The tree was read once, recursively, from the branch's commit; blobs of the binary file too (to
    # find out), never of files the globs or the type leave out.
    assert [r.query for r in gh.requests_to("/repos/{o}/{r}/git/trees/{sha}")] == [{"recursive": "1"}]
    fetched = {r.path.rsplit("/", 1)[-1] for r in gh.blob_requests()}
    assert blob_sha(_bytes("src/vendor/lib.js")) not in fetched
    assert blob_sha(_bytes("assets/logo.png")) not in fetched
    assert len(fetched) == 5


def test_unchanged_files_are_neither_fetched_nor_embedded_again(store: Any, gh: FakeGitHub, app: str) -> None:
    gh.push("acme/api", FILES)
    enable(store, app, CODEBASE, filters=SETTINGS)
    assert run_stream_sync(app, CODEBASE, store=store).status == "success"
    blobs, embedded = len(gh.blob_requests()), _embedded_chunks(store)
    repo_id = _sources(store)["acme/api"]["id"]

    again = run_stream_sync(app, CODEBASE, store=store)
    assert again.status == "success" and again.counts["synced"] == 0, again.counts
    assert len(gh.blob_requests()) == blobs + 1  # only the binary file is looked at again

    # One file changed, one removed, one added.
    gh.push("acme/api", {"src/app.py": _bytes("src/app.py") + b"\n# now with gzip\n", "docs/guide.md": None,
                         "src/new.py": "VALUE = 42\n"})
    before_chunks = {r["id"] for r in rows(store, "SELECT id FROM knowledge_chunks")}
    mark = one(store, "SELECT now()")
    third = run_stream_sync(app, CODEBASE, store=store)
    assert third.status == "success", third.error
    assert len(gh.blob_requests()) == blobs + 1 + 3  # the changed file, the new one, the binary one
    sources = _sources(store)
    assert {s["name"] for s in sources.values()} == {"acme/api", "README.md", "src/app.py", "src/util/strings.py",
                                                    "src/new.py"}
    assert sources["acme/api"]["id"] == repo_id  # the repository's source is updated in place
    assert one(store, "SELECT count(*) FROM knowledge_sources WHERE name = 'acme/api'") == 1
    assert third.counts["deleted"] == 2  # the old version of src/app.py and docs/guide.md
    new_chunks = {r["id"] for r in rows(store, "SELECT c.id FROM knowledge_chunks c JOIN knowledge_sources k"
                                               " ON k.id = c.source_id WHERE k.deleted_at IS NULL")} - before_chunks
    # Only the two new file versions were embedded as new chunks; besides them only the repository
    # index (its file list changed) was embedded again; no unchanged file's chunk was.
    assert len(new_chunks) >= 2 and _embedded_chunks(store) - embedded == len(new_chunks)
    index_chunks = {r["id"] for r in rows(store, "SELECT id FROM knowledge_chunks WHERE source_id = %s", repo_id)}
    again_embedded = {r["entity_id"] for r in rows(
        store, "SELECT entity_id FROM embeddings WHERE entity_type = 'knowledge_chunk' AND updated_at > %s", mark)}
    assert again_embedded == new_chunks | index_chunks
    assert one(store, "SELECT count(*) FROM knowledge_sources WHERE deleted_at IS NOT NULL") == 2


def test_branch_setting_truncated_trees_and_an_unknown_branch(store: Any, gh: FakeGitHub, app: str) -> None:
    gh.push("acme/api", {"a/b/c.txt": "deep\n", "top.txt": "top\n"}, branch="dev")
    gh.truncate_trees = True
    enable(store, app, CODEBASE, settings={"branch": "dev"})
    result = run_stream_sync(app, CODEBASE, store=store)
    assert result.status == "success", result.error
    assert {s["name"] for s in _sources(store).values()} == {"acme/api", "a/b/c.txt", "top.txt"}
    assert any(r.query == {} for r in gh.requests_to("/repos/{o}/{r}/git/trees/{sha}"))  # walked level by level

    enable(store, app, CODEBASE, settings={"branch": "nope"})
    missing = run_stream_sync(app, CODEBASE, store=store)
    assert missing.status == "error" and "branch 'nope' of acme/api not found" in (missing.error or "")
