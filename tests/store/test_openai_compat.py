"""OpenAI-compatible embeddings and classification against a stateful fake on 127.0.0.1.

The fake serves ``POST /v1/embeddings`` (deterministic vectors at each model's native size, shortened on
request by the ``text-embedding-3`` models only, answered out of order as the API may) and ``POST /v1/chat/completions`` (a JSON tag list), checks the bearer key and records every call.
Sessions go in through ``StreamIngest`` on the real store, so what is counted is what ingestion asks for.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hissuno_airflow import settings
from hissuno_airflow.kit import SessionRecord
from hissuno_airflow.kit.errors import ProviderAuthError, ProviderError
from hissuno_airflow.plugins.sample.data import THEMES
from hissuno_airflow.store import embedder as emb
from hissuno_airflow.store.classify import classify_rules
from hissuno_airflow.store.ingest import StreamIngest
from tests.fakes.server import FakeProvider, FakeRequest, FakeResponse, Reply, post

KEY = "sk-test-4b1d9e7c2a5f8036"
SMALL = "text-embedding-3-small"
LARGE = "text-embedding-3-large"
NATIVE = {SMALL: 1536, LARGE: 3072, "text-embedding-ada-002": 1536, "nomic-embed-text": 768,
          "all-minilm": 384, "wide-4096": 4096}
"""Each model's own vector size. Only ``text-embedding-3`` models honour ``dimensions``; OpenAI refuses the
parameter for ada-002 (400), as vLLM does for models without it; ``all-minilm`` ignores it (Ollama)."""
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


class FakeOpenAI(FakeProvider):
    """Embeddings and chat completions, bearer-key protected, counting calls and inputs."""

    name = "openai"
    require_auth = True

    def __init__(self) -> None:
        super().__init__()
        self.embedding_calls: list[dict[str, Any]] = []
        self.chat_calls: list[dict[str, Any]] = []
        self.chat_content = '["wins", "change_request"]'
        self.chat_status = 200

    @staticmethod
    def vector(text: str, size: int = emb.DIMENSIONS) -> list[float]:
        """The vector this fake returns for ``text``: seeded by the text, unit length."""
        rng = random.Random(hashlib.sha256(text.encode()).digest())
        raw = [rng.uniform(-1.0, 1.0) for _ in range(size)]
        norm = math.sqrt(sum(v * v for v in raw))
        return [v / norm for v in raw]

    @property
    def inputs(self) -> list[str]:
        """Every text embedded so far, in call order."""
        return [t for call in self.embedding_calls for t in call["input"]]

    @post("/v1/embeddings")
    def embeddings(self, req: FakeRequest) -> Reply:
        body = req.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        size, asked = NATIVE[body["model"]], body.get("dimensions")
        if asked is not None and body["model"].startswith("text-embedding-3"):
            size = asked
        elif asked is not None and body["model"] != "all-minilm":
            return FakeResponse(400, {"error": {"message": "This model does not support specifying dimensions.",
                                                "type": "invalid_request_error", "param": "dimensions"}})
        self.embedding_calls.append({"model": body["model"], "input": texts, "dimensions": asked})
        data = [{"object": "embedding", "index": i, "embedding": self.vector(t, size)} for i, t in enumerate(texts)]
        # Reversed on purpose: clients must order by ``index``, not by position.
        return {"object": "list", "model": body["model"], "data": data[::-1],
                "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)}}

    @post("/v1/chat/completions")
    def chat(self, req: FakeRequest) -> Reply:
        body = req.json()
        self.chat_calls.append(body)
        if self.chat_status != 200:
            return FakeResponse(self.chat_status, {"error": {"message": "overloaded", "type": "server_error"}})
        return {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.chat_content}}]}


@pytest.fixture
def openai(serve_fake: Any) -> FakeOpenAI:
    fake: FakeOpenAI = serve_fake(FakeOpenAI())
    fake.issue_token(KEY)
    return fake


@pytest.fixture
def use_embedder() -> Iterator[Any]:
    """Install an embedder process-wide for one test: ``use_embedder(e)``; the default is restored after."""

    def install(embedder: Any) -> Any:
        emb.set_embedder(embedder)
        return embedder

    yield install
    emb.set_embedder(None)


def _session(i: int, *, edit: str = "") -> SessionRecord:
    return SessionRecord(
        external_id=f"chat-{i}", source="sample", name=f"Invoice question {i}", updated_at=T0 + timedelta(minutes=i),
        messages=[{"sender_type": "user", "content": f"Where can I download invoice number {i}?{edit}"},
                  {"sender_type": "human_agent", "content": "Under Billing > Invoices."}],
    )


def _ingest(store: Any, connection_id: str, records: list[SessionRecord]) -> list[str]:
    ing = StreamIngest(store, project_id=settings.default_project_id(), connection_id=connection_id,
                       stream_id="sessions")
    actions: list[str] = [ing.session(r).action for r in records]
    ing.close()
    return actions


def _embeddings(store: Any) -> dict[str, tuple[str, list[float]]]:
    with store.connection() as c:
        rows = c.execute("SELECT s.name, e.model, e.embedding FROM embeddings e JOIN sessions s ON s.id = e.entity_id"
                         " WHERE e.entity_type = 'session'").fetchall()
    return {r["name"]: (r["model"], [float(x) for x in r["embedding"].to_list()]) for r in rows}


def _close(a: list[float], b: list[float]) -> bool:
    # pgvector stores float4: compare at single precision.
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


def test_embedder_sends_at_most_100_inputs_per_call_and_orders_by_index(openai: FakeOpenAI) -> None:
    texts = [f"text number {i}" for i in range(250)]
    vectors = emb.OpenAIEmbedder(openai.url + "/v1", KEY).embed(texts)
    assert [len(c["input"]) for c in openai.embedding_calls] == [100, 100, 50]
    assert {c["model"] for c in openai.embedding_calls} == {SMALL}
    assert {c["dimensions"] for c in openai.embedding_calls} == {emb.DIMENSIONS}
    assert openai.inputs == texts
    assert vectors == [FakeOpenAI.vector(t) for t in texts]


def test_a_wrong_key_is_an_error_naming_the_call_not_the_key(openai: FakeOpenAI) -> None:
    with pytest.raises(ProviderAuthError) as ei:
        emb.OpenAIEmbedder(openai.url + "/v1", "sk-wrong-0000000000").embed(["hello"])
    assert str(ei.value) == "embeddings POST /v1/embeddings: 401 Unauthorized"
    assert "sk-wrong" not in str(ei.value)
    assert openai.embedding_calls == []


def test_a_rate_limited_embeddings_call_is_retried_honouring_retry_after(openai: FakeOpenAI) -> None:
    from hissuno_airflow.kit.http import RetryPolicy

    sleeps: list[float] = []
    openai.inject_429("/v1/embeddings", retry_after=3, times=1)
    e = emb.OpenAIEmbedder(openai.url + "/v1", KEY, retry=RetryPolicy(sleep=sleeps.append))
    assert len(e.embed(["hello", "world"])) == 2
    assert sleeps == [3.0]


def test_ingest_embeds_new_text_once_in_batches_and_never_again_while_unchanged(
    store: Any, sample_connection: Any, openai: FakeOpenAI, use_embedder: Any
) -> None:
    use_embedder(emb.OpenAIEmbedder(openai.url + "/v1", KEY))
    cid = sample_connection.id
    records = [_session(i) for i in range(120)]

    assert set(_ingest(store, cid, records)) == {"created"}
    assert [len(c["input"]) for c in openai.embedding_calls] == [100, 20]
    stored = _embeddings(store)
    assert len(stored) == 120 and {model for model, _ in stored.values()} == {SMALL}
    # The vector stored for a session is the one the server computed for that session's text.
    text_7 = next(t for t in openai.inputs if t.startswith("Invoice question 7\n"))
    assert _close(stored["Invoice question 7"][1], FakeOpenAI.vector(text_7))

    assert set(_ingest(store, cid, records)) == {"unchanged"}
    assert len(openai.embedding_calls) == 2, "unchanged text must not be sent again"

    records[42] = _session(42, edit=" It is for March.")
    _ingest(store, cid, records)
    assert len(openai.embedding_calls) == 3 and openai.embedding_calls[2]["input"] == [openai.inputs[-1]]
    assert "It is for March." in openai.inputs[-1]


def test_a_new_embedder_model_reembeds_changed_text_and_records_the_model(
    store: Any, sample_connection: Any, openai: FakeOpenAI, use_embedder: Any
) -> None:
    cid = sample_connection.id
    use_embedder(emb.OpenAIEmbedder(openai.url + "/v1", KEY))
    _ingest(store, cid, [_session(i) for i in range(3)])
    use_embedder(emb.OpenAIEmbedder(openai.url + "/v1", KEY, model=LARGE))
    _ingest(store, cid, [_session(0, edit=" Still missing.")])
    assert openai.embedding_calls[-1]["model"] == LARGE and len(openai.embedding_calls[-1]["input"]) == 1
    # Vectors of both models coexist (migration 0010); the new model's only where the text changed.
    with store.connection() as c:
        pairs = {(r["name"], r["model"]) for r in c.execute(
            "SELECT s.name, e.model FROM embeddings e JOIN sessions s ON s.id = e.entity_id")}
    assert pairs == {("Invoice question 0", LARGE), ("Invoice question 0", SMALL),
                     ("Invoice question 1", SMALL), ("Invoice question 2", SMALL)}


def test_switching_the_embedder_model_reembeds_on_the_next_sync(
    store: Any, sample_connection: Any, openai: FakeOpenAI, use_embedder: Any
) -> None:
    cid = sample_connection.id
    records = [_session(i) for i in range(3)]
    use_embedder(emb.OpenAIEmbedder(openai.url + "/v1", KEY))
    _ingest(store, cid, records)
    use_embedder(emb.OpenAIEmbedder(openai.url + "/v1", KEY, model=LARGE))
    _ingest(store, cid, records)
    # Every session now has a vector of the new model (the old ones stay beside them).
    with store.connection() as c:
        n = c.execute("SELECT count(*) AS n FROM embeddings WHERE model = %s", (LARGE,)).fetchone()["n"]
    assert n == 3


@pytest.fixture
def openai_env(openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``HISSUNO_EMBEDDER=openai`` against the fake; ``openai_env(model, dims)`` returns the configured
    embedder, chosen by ``get_embedder`` from the environment as the product does."""

    def configure(model: str | None = None, dims: str | None = None) -> Any:
        monkeypatch.setenv("HISSUNO_EMBEDDER", "openai")
        monkeypatch.setenv("HISSUNO_EMBEDDINGS_BASE_URL", openai.url + "/v1")
        monkeypatch.delenv("HISSUNO_EMBEDDINGS_API_KEY", raising=False)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)  # the fallback name
        for name, value in (("HISSUNO_EMBEDDINGS_MODEL", model), ("HISSUNO_EMBEDDINGS_DIMENSIONS", dims)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        emb.set_embedder(None)
        return emb.get_embedder()

    yield configure
    emb.set_embedder(None)


def test_hissuno_embedder_openai_embeds_through_the_configured_endpoint(
    store: Any, sample_connection: Any, openai: FakeOpenAI, openai_env: Any
) -> None:
    e = openai_env(model=LARGE)
    assert isinstance(e, emb.OpenAIEmbedder) and e.model == LARGE and e.dims == emb.DIMENSIONS
    _ingest(store, sample_connection.id, [_session(i) for i in range(3)])  # the process-wide embedder
    assert {(c["model"], c["dimensions"]) for c in openai.embedding_calls} == {(LARGE, emb.DIMENSIONS)}
    assert {r.bearer_token for r in openai.requests_to("/v1/embeddings")} == {KEY}
    with store.connection() as c:
        rows = c.execute("SELECT model, dims, count(*) AS n FROM embeddings GROUP BY 1, 2").fetchall()
    assert [(r["model"], r["dims"], r["n"]) for r in rows] == [(LARGE, emb.DIMENSIONS, 3)]


@pytest.mark.parametrize(("model", "dims", "size"), [("nomic-embed-text", None, 768),
                                                     ("text-embedding-ada-002", None, 1536),
                                                     (LARGE, "512", 512)])
def test_a_compatible_model_is_stored_and_searched_at_its_own_size(
    store: Any, sample_connection: Any, openai: FakeOpenAI, openai_env: Any, model: str, dims: str | None,
    size: int
) -> None:
    # nomic and ada-002 refuse ``dimensions`` (400): the embedder must not send it, and learns their size;
    # a text-embedding-3 model is asked for the configured size.
    e = openai_env(model=model, dims=dims)
    assert e.dims == size
    _ingest(store, sample_connection.id, [_session(i) for i in range(3)])
    assert {c["dimensions"] for c in openai.embedding_calls} == {dims and int(dims)}
    with store.connection() as c:
        rows = c.execute("SELECT model, dims, vector_dims(embedding) AS n FROM embeddings").fetchall()
    assert {(r["model"], r["dims"], r["n"]) for r in rows} == {(model, size, size)}
    from hissuno_airflow.store.search import search

    hits = search(store, "download invoice", project_id=settings.default_project_id(), mode="vector", limit=3)
    assert len(hits) == 3 and all(h.similarity is not None for h in hits)


@pytest.mark.parametrize(("model", "dims", "message"), [
    ("all-minilm", "256", "expected 256-number vectors; got 384 (does the endpoint honour HISSUNO_EMBEDDINGS_DIMENSIONS?)"),
    ("wide-4096", None, "answers 4096-number vectors; at most 2000 can be indexed: set HISSUNO_EMBEDDINGS_DIMENSIONS"),
])
def test_a_vector_size_that_cannot_be_stored_is_an_error_naming_the_setting(
    openai_env: Any, model: str, dims: str | None, message: str
) -> None:
    with pytest.raises(ProviderError, match=re.escape(message)):
        openai_env(model=model, dims=dims).embed(["hello"])


@pytest.mark.parametrize(("env", "message"), [
    ({"HISSUNO_EMBEDDINGS_DIMENSIONS": "wide"}, "HISSUNO_EMBEDDINGS_DIMENSIONS: expected a whole number"),
    ({"HISSUNO_EMBEDDINGS_DIMENSIONS": "4096"}, "HISSUNO_EMBEDDINGS_DIMENSIONS: expected 1 to 2000; got 4096"),
    ({"OPENAI_API_KEY": ""}, "HISSUNO_EMBEDDER=openai: expected HISSUNO_EMBEDDINGS_API_KEY or OPENAI_API_KEY"),
])
def test_openai_settings_errors_name_the_setting(
    openai_env: Any, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    openai_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    emb.set_embedder(None)
    with pytest.raises(ValueError, match=re.escape(message)):
        emb.get_embedder()


def test_llm_classifier_tags_through_the_endpoint_and_falls_back_to_rules_on_500(
    store: Any, sample_connection: Any, openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HISSUNO_CLASSIFIER", "llm")
    monkeypatch.setenv("HISSUNO_LLM_BASE_URL", openai.url + "/v1")
    monkeypatch.setenv("HISSUNO_LLM_API_KEY", KEY)
    monkeypatch.setenv("HISSUNO_LLM_MODEL", "tagger-mini")
    bug_report = "The CSV export crashes with a 500 error every time."
    cid = sample_connection.id

    def ingest(ext: str) -> list[str]:
        rec = SessionRecord(external_id=ext, source="sample", name=ext, updated_at=T0,
                            messages=[{"sender_type": "user", "content": bug_report}])
        _ingest(store, cid, [rec])
        with store.connection() as c:
            return list(c.execute("SELECT s.tags FROM sessions s JOIN integration_synced_records r"
                                  " ON r.hissuno_id = s.id WHERE r.external_id = %s", (ext,)).fetchone()["tags"])

    # The model's answer wins over what the rules would say (["bug"]).
    openai.chat_content = 'Here you go: ["wins", "change_request", "not_a_tag"]'
    assert ingest("llm-1") == ["wins", "change_request"]
    call = openai.chat_calls[-1]
    assert call["model"] == "tagger-mini" and bug_report in call["messages"][0]["content"]
    assert openai.requests_to("/v1/chat/completions")[-1].bearer_token == KEY

    openai.chat_status = 500
    assert ingest("llm-2") == ["bug"]
    assert len(openai.chat_calls) == 2, "the fallback follows a real failed call"


def _theme(title: str) -> list[tuple[str, str]]:
    theme = next(t for t in THEMES if t["title"] == title)
    return [(s, c) for u, a in zip(theme["user"], theme["agent"], strict=True)
            for s, c in (("user", u), ("human_agent", a))]


@pytest.mark.parametrize(("conversation", "tags"), [
    (_theme("CSV export fails with a 500 error"), ["bug"]),
    (_theme("Login loop after enabling SSO"), ["bug"]),
    (_theme("Request: Slack notifications for new feedback"), ["feature_request"]),
    (_theme("Rename 'Projects' to 'Workspaces' in the sidebar"), ["change_request"]),
    (_theme("Renewal and expansion to two more teams"), ["wins"]),
    (_theme("Considering cancelling: too expensive"), ["losses"]),
    ([("user", "Just checking in after onboarding."), ("human_agent", "Good to hear from you!")],
     ["general_feedback"]),
    # The customer's words decide; an agent mentioning a bug does not make it one.
    ([("user", "Thanks for the quick reply."), ("human_agent", "That was a bug on our side, now fixed.")],
     ["general_feedback"]),
    # Without customer messages the whole conversation is read.
    ([("human_agent", "Our export is broken for this account, escalating.")], ["bug"]),
    ([("user", "Love the new search! Please add saved filters too.")], ["feature_request", "wins"]),
    # Case does not matter (the rules read lower-cased text).
    ([("user", "The Export CRASHED again; WE ARE CANCELLING.")], ["bug", "losses"]),
], ids=["export-bug", "sso-bug", "feature", "change", "wins", "losses", "general", "agent-only-bug",
        "no-user-text", "two-tags", "upper-case"])
def test_rule_classifier_tags_sample_conversations(conversation: list[tuple[str, str]], tags: list[str]) -> None:
    assert classify_rules(conversation) == tags
