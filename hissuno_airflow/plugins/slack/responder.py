"""What the bot says: a pluggable responder, and the model that grounds answers and classifies messages.

The default responder answers from the project's knowledge (the nearest knowledge chunks, found through
``WebhookCtx.search_knowledge``) through an OpenAI-compatible ``/chat/completions`` endpoint when one is
configured, and otherwise posts a short acknowledgement naming the session the thread was captured as,
linked when ``HISSUNO_SLACK_SESSION_URL`` (a template with ``{session_id}``) says where sessions are shown.
Configuration, shared with the session classifier:
``HISSUNO_LLM_BASE_URL`` (default OpenAI), ``HISSUNO_LLM_API_KEY`` or ``OPENAI_API_KEY``, ``HISSUNO_LLM_MODEL``
(default ``gpt-4o-mini``); a model counts as configured when the base URL or a key is set.

Another responder: ``HISSUNO_SLACK_RESPONDER=package.module:function`` (or ``set_responder`` in-process), a
callable ``(ResponderInput) -> str | None``; None posts nothing.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from hissuno_airflow.kit.knowledge import KnowledgeHit

DEFAULT_LLM_BASE = "https://api.openai.com/v1"
LLM_TIMEOUT_S = 20.0
SYSTEM_PROMPT = (
    "You are a support assistant answering in a Slack thread. Answer briefly and only from the knowledge "
    "excerpts given; when they do not answer the question, say so and that a person will follow up."
)


@dataclass(frozen=True)
class ResponderInput:
    """What a responder gets for one message it should answer."""

    question: str
    """The message to answer (the bot's mention stripped)."""
    thread: Sequence[tuple[str, str]]
    """The thread so far as (role, text), role ``user`` or ``assistant``, oldest first."""
    session_id: str | None
    """Hissuno id of the session the thread is captured as."""
    session_url: str | None
    """Where a person can see that session (``HISSUNO_SLACK_SESSION_URL`` filled in), else None."""
    author_name: str | None = None
    author_email: str | None = None
    external: bool = False
    """The author's email domain is not the workspace's."""
    search: Callable[[str, int], list[KnowledgeHit]] = field(default=lambda q, n: [])
    """Knowledge search of the project (nearest chunks, best first)."""


Responder = Callable[[ResponderInput], "str | None"]

_override: Responder | None = None


def set_responder(responder: Responder | None) -> None:
    """Use ``responder`` in this process (None: back to the configured or default one)."""
    global _override
    _override = responder


def current_responder() -> Responder:
    """The in-process override, else ``HISSUNO_SLACK_RESPONDER``, else ``default_responder``."""
    if _override is not None:
        return _override
    spec = os.environ.get("HISSUNO_SLACK_RESPONDER", "").strip()
    if spec:
        module, _, attr = spec.partition(":")
        if not attr:
            raise ValueError(f"HISSUNO_SLACK_RESPONDER: expected 'package.module:function'; got {spec!r}")
        fn = getattr(importlib.import_module(module), attr)
        if not callable(fn):
            raise ValueError(f"HISSUNO_SLACK_RESPONDER: {spec!r} is not callable")
        return fn  # type: ignore[no-any-return]
    return default_responder


@dataclass(frozen=True)
class ChatModel:
    """An OpenAI-compatible chat endpoint."""

    base_url: str
    api_key: str
    model: str

    @classmethod
    def from_env(cls) -> ChatModel | None:
        """The configured model, or None when neither a base URL nor a key is set."""
        base = os.environ.get("HISSUNO_LLM_BASE_URL", "").strip()
        key = os.environ.get("HISSUNO_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
        if not base and not key:
            return None
        return cls((base or DEFAULT_LLM_BASE).rstrip("/"), key, os.environ.get("HISSUNO_LLM_MODEL", "gpt-4o-mini"))

    def chat(self, messages: list[dict[str, str]]) -> str:
        """The first choice's text; raises on any failure (the caller decides what that means)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        resp = httpx.post(f"{self.base_url}/chat/completions", timeout=LLM_TIMEOUT_S, headers=headers,
                          json={"model": self.model, "messages": messages, "temperature": 0})
        resp.raise_for_status()
        content = resp.json()["choices"][0]["message"]["content"]
        if not isinstance(content, str) or not content.strip():
            raise ValueError("the chat endpoint answered no text")
        return content.strip()


def acknowledgement(inp: ResponderInput) -> str:
    """The answer without a model: the thread is captured and a person will follow up."""
    where = f"<{inp.session_url}|session {inp.session_id}>" if inp.session_url else f"session `{inp.session_id}`"
    return f"Thanks! I've captured this thread for the team as {where}; someone will follow up here."


def _context(hits: Sequence[KnowledgeHit]) -> str:
    parts = []
    for n, h in enumerate(hits, 1):
        title = " / ".join(x for x in (h.source_name, h.heading) if x)
        parts.append(f"[{n}] {title}\n{h.text}".strip())
    return "\n\n".join(parts) or "(no knowledge found)"


def default_responder(inp: ResponderInput) -> str:
    """A grounded answer when a model is configured, else the acknowledgement."""
    model = ChatModel.from_env()
    if model is None:
        return acknowledgement(inp)
    hits = inp.search(inp.question, 5)
    messages = [{"role": "system", "content": SYSTEM_PROMPT + "\n\nKnowledge:\n" + _context(hits)}]
    messages += [{"role": role, "content": text} for role, text in inp.thread[-20:]]
    if not inp.thread or inp.thread[-1][1] != inp.question:
        messages.append({"role": "user", "content": inp.question})
    return model.chat(messages)


def should_respond(thread: Sequence[tuple[str, str]], text: str) -> bool:
    """The classifier fallback: the model answers RESPOND or SKIP; no model, or any error, means respond."""
    model = ChatModel.from_env()
    if model is None:
        return True
    convo = "\n".join(f"{role}: {t}" for role, t in thread[-20:])
    prompt = ("A support bot takes part in this Slack thread. Should it answer the newest message, or is the "
              "message meant for the people in the thread? Answer with exactly RESPOND or SKIP.\n\n"
              f"{convo}\n\nNewest message: {text}")
    try:
        answer = model.chat([{"role": "user", "content": prompt}])
    except Exception:
        return True
    return "SKIP" not in answer.upper()


