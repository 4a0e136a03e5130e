"""The default embedder is a real offline model, loaded without any network, and switching models
re-embeds lazily from stored text, only what lacks a vector of the current model."""

from __future__ import annotations

import socket
import uuid

import numpy as np
import pytest

from hissuno_airflow.store import embedder as emb
from hissuno_airflow.store.enrich import Enricher
from hissuno_airflow.store.enrich import search as vector_search
from hissuno_airflow.store.reembed import missing, reembed

PROJECT = "00000000-0000-0000-0000-000000000001"
QUERY = "customer cannot log in after single sign-on"
DOCS = [
    "User is stuck in a login loop after SSO redirect",
    "Invoice PDF is missing the VAT number",
    "Export to CSV drops the last column",
    "Please add a dark mode to the dashboard",
    "Webhook deliveries arrive twice for every event",
]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test (the model must come from the installed wheel)."""
    attempts: list[object] = []

    def refuse(self, address, *a, **k):
        attempts.append(address)
        raise OSError(f"network blocked in this test: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: refuse(None, host))  # name lookups too
    return attempts


def test_default_embedder_is_the_offline_model_and_never_reaches_the_network(no_network, monkeypatch):
    monkeypatch.delenv("HISSUNO_EMBEDDER", raising=False)
    emb.set_embedder(None)
    try:
        e = emb.get_embedder()
        assert isinstance(e, emb.WordLlamaEmbedder)
        assert e.model == "wordllama-l2-supercat-256" and e.dims == 256
        vecs = np.array(e.embed([QUERY, *DOCS]))
    finally:
        emb.set_embedder(None)
    assert no_network == []
    assert vecs.shape == (6, 256)  # the model's own size: stored as is, never padded
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    sims = vecs[1:] @ vecs[0]
    # No word in common, yet the login-loop record is the nearest: meaning, not word overlap.
    assert int(np.argmax(sims)) == 0, sims
    hashed = np.array(emb.HashEmbedder().embed(["cannot sign in", "login loop after SSO"]))
    assert float(hashed[0] @ hashed[1]) == 0.0  # what the lexical fallback sees in such a pair


@pytest.mark.parametrize("kind,cls", [("hash", emb.HashEmbedder), ("local", emb.WordLlamaEmbedder),
                                      ("wordllama", emb.WordLlamaEmbedder)])
def test_embedder_choice(monkeypatch, kind, cls):
    monkeypatch.setenv("HISSUNO_EMBEDDER", kind)
    emb.set_embedder(None)
    try:
        assert isinstance(emb.get_embedder(), cls)
    finally:
        emb.set_embedder(None)


def test_unknown_embedder_names_the_setting(monkeypatch):
    monkeypatch.setenv("HISSUNO_EMBEDDER", "bert")
    emb.set_embedder(None)
    with pytest.raises(ValueError, match="HISSUNO_EMBEDDER: expected wordllama"):
        emb.get_embedder()
    emb.set_embedder(None)


def _n(store, sql, *args):
    with store.connection() as c:
        return c.execute(sql, args).fetchone()["n"]


def test_switching_models_reembeds_lazily_and_only_what_is_missing(store):
    hashed, model = emb.HashEmbedder(), emb.WordLlamaEmbedder()
    ids = [str(uuid.uuid4()) for _ in DOCS]
    first = Enricher(store, PROJECT, hashed)
    for i, text in zip(ids, DOCS, strict=True):
        first.queue("session", i, text, graph=False)
    first.run()
    assert missing(store, PROJECT, model.model) == 5
    # Nothing of the new model yet: its search finds nothing rather than mixing in hash vectors.
    assert vector_search(store, QUERY, project_id=PROJECT, embedder=model) == []

    events = []
    assert reembed(store, PROJECT, embedder=model, on_progress=events.append, budget=2) == 2
    assert [(e.done, e.total) for e in events] == [(2, 2)]
    assert reembed(store, PROJECT, embedder=model, on_progress=events.append) == 3
    assert events[-1].done == events[-1].total == 3
    assert reembed(store, PROJECT, embedder=model) == 0  # hash-gated: nothing left
    assert missing(store, PROJECT, model.model) == 0
    # Both models' vectors coexist, each with its native size.
    with store.connection() as c:
        rows = c.execute("SELECT model, dims, count(*) AS n FROM embeddings GROUP BY 1, 2 ORDER BY 1").fetchall()
    assert [(r["model"], r["dims"], r["n"]) for r in rows] == [
        ("hissuno-hash-v2", 1536, 5), ("wordllama-l2-supercat-256", 256, 5)]
    hits = vector_search(store, QUERY, project_id=PROJECT, embedder=model)
    assert hits[0][0] == ids[0]
    # A text that changed is embedded again; an unchanged one is not (same model, same hash).
    again = Enricher(store, PROJECT, model)
    again.queue("session", ids[0], DOCS[0], graph=False)
    again.queue("session", ids[1], DOCS[1] + " (updated)", graph=False)
    assert again.run() == 1


class _OtherHashModel(emb.HashEmbedder):
    """A second model of the same vector size (as OpenAI's small and large models are, both at 1536)."""

    model = "hissuno-hash-other"


def test_search_reads_only_the_current_models_vectors_even_at_the_same_size(store):
    ids = [str(uuid.uuid4()) for _ in DOCS]
    first = Enricher(store, PROJECT, emb.HashEmbedder())
    for i, text in zip(ids, DOCS, strict=True):
        first.queue("session", i, text, graph=False)
    first.run()
    other = _OtherHashModel()
    # Same size, same index: only the model column tells them apart, and nothing of this model exists yet.
    assert vector_search(store, DOCS[1], project_id=PROJECT, embedder=other) == []
    assert reembed(store, PROJECT, embedder=other) == 5
    hits = vector_search(store, DOCS[1], project_id=PROJECT, embedder=other, limit=10)
    assert hits[0][0] == ids[1] and len(hits) == 5  # each entity once: its vector of this model


_MEMORY_PROBE = """
import sys
from hissuno_airflow.store.embedder import WordLlamaEmbedder

def rss_mb():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) // 1024

e = WordLlamaEmbedder()
after = []
for rnd in range(3):
    for start in range(0, 10_000, 500):
        e.embed([f"Ticket {i}-{rnd}: exporting ticket {i * 13 + rnd} to CSV fails with error E{i % 977}."
                 for i in range(start, start + 500)])
    after.append(rss_mb())
print(*after)
"""


def test_embedding_pass_after_pass_does_not_grow_the_processs_memory():
    # A long sync embeds pass after pass of 10,000 texts. Tokenizing them in parallel threads left each
    # thread's allocator arena at its high-water mark: the process grew ~45 MB after its first pass
    # (the growth of a 100,000-record sync's peak). Measured in a fresh process, by its resident size.
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=120)
    first, *later = (int(v) for v in out.stdout.split())
    assert max(later) - first < 15, f"resident MB after each pass of 10,000 texts: {[first, *later]}"


def test_a_run_with_nothing_to_embed_never_loads_the_model(store, sample_connection):
    # Most scheduled syncs ingest nothing new, and each Airflow task is a fresh process: loading the weights
    # there cost 1.1 CPU-seconds and 93 MB for nothing. They load at the first text that needs a vector.
    from hissuno_airflow import settings
    from hissuno_airflow.store.ingest import StreamIngest

    def run(embedder: emb.WordLlamaEmbedder, name: str) -> None:
        emb.set_embedder(embedder)
        ing = StreamIngest(store, project_id=settings.default_project_id(), connection_id=sample_connection.id,
                           stream_id="sessions")
        ing.session(external_id="lazy-1", source="sample", name=name,
                    messages=[{"sender_type": "user", "content": "The export button does nothing."}])
        ing.close()

    try:
        first, again, renamed = emb.WordLlamaEmbedder(), emb.WordLlamaEmbedder(), emb.WordLlamaEmbedder()
        assert first.model == "wordllama-l2-supercat-256" and first.dims == 256 and not first.loaded
        run(first, "Export broken")
        assert first.loaded  # a new session: its text needed a vector
        run(again, "Export broken")  # the same record again: nothing written, nothing embedded
        assert not again.loaded
        run(renamed, "Export button broken")  # changed, so its text is embedded anew
        assert renamed.loaded
    finally:
        emb.set_embedder(None)


def test_knowing_the_model_does_not_import_it():
    import subprocess
    import sys
    from pathlib import Path

    probe = ("import sys\nfrom hissuno_airflow.store.embedder import WordLlamaEmbedder\n"
             "e = WordLlamaEmbedder()\nprint(e.model, e.dims, 'wordllama' in sys.modules)\n"
             "e.embed(['hello'])\nprint('wordllama' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert out.stdout.split() == ["wordllama-l2-supercat-256", "256", "False", "True"]
