"""Embedders: a zero-configuration local default and an OpenAI-compatible HTTP embedder.

``HISSUNO_EMBEDDER=local`` (default) needs no network and no model download: a feature-hashing
embedder over word unigrams and bigrams (1536 dimensions, L2-normalised), good enough for "find the
session about X" and for similarity edges. ``HISSUNO_EMBEDDER=openai`` calls ``/embeddings`` of
``HISSUNO_EMBEDDINGS_BASE_URL`` (default OpenAI) with ``HISSUNO_EMBEDDINGS_API_KEY`` or
``OPENAI_API_KEY`` and model ``text-embedding-3-small``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import zlib
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Protocol

DIMENSIONS = 1536
_WORD = re.compile(r"[a-z0-9][a-z0-9'_-]*")
_STOP = frozenset(
    ["a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "for", "with", "is", "are", "was", "were", "be", "been", "it", "this", "that", "i", "you", "we", "they", "he", "she", "my", "our", "your", "their", "me", "us", "them", "so", "as", "by", "from", "not", "no", "do", "does", "did", "have", "has", "had", "can", "could", "would", "should", "will", "just", "about", "into", "than", "then", "there", "here", "what", "when", "which", "who", "how", "all", "any", "some"]
)


class Embedder(Protocol):
    """Turns texts into vectors of ``DIMENSIONS`` floats."""

    model: str

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class HashEmbedder:
    """Deterministic local embedder (feature hashing of unigrams and bigrams, signed, L2-normalised)."""

    model = "hissuno-hash-v2"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed each text."""
        self.calls += 1
        return [self._one(t) for t in texts]

    @staticmethod
    def _one(text: str) -> list[float]:
        words = [w for w in _WORD.findall(text.lower()) if w not in _STOP]
        weights: dict[int, float] = {}
        # crc32 rather than hash(): str hashes are salted per process and vectors must be stable.
        for feat, weight in [(w, 1.0) for w in words] + [(f"{a} {b}", 0.5) for a, b in pairwise(words)]:
            h = zlib.crc32(feat.encode())
            idx = h % DIMENSIONS
            weights[idx] = weights.get(idx, 0.0) + (weight if h & 0x80000000 else -weight)
        norm = math.sqrt(sum(v * v for v in weights.values()))
        vec = [0.0] * DIMENSIONS
        if norm == 0:
            vec[0] = 1.0
            return vec
        for idx, v in weights.items():
            vec[idx] = v / norm
        return vec


class OpenAIEmbedder:
    """OpenAI-compatible ``POST {base}/embeddings``; up to 100 inputs per call.

    Calls go through the kit's ``ProviderClient``, so a 429 or 5xx from the embeddings provider is
    retried honouring ``Retry-After`` and surfaces as a retriable ``ProviderError`` when it persists.
    """

    model = "text-embedding-3-small"

    def __init__(self, base_url: str, api_key: str, model: str | None = None, timeout: float = 60.0,
                 retry: Any = None) -> None:
        from ..kit.http import BearerAuth, ProviderClient

        self.model = model or self.model
        self._client = ProviderClient("embeddings", base_url.rstrip("/"), auth=BearerAuth(api_key),
                                      timeout=timeout, retry=retry)
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed texts in batches of 100."""
        out: list[list[float]] = []
        for i in range(0, len(texts), 100):
            self.calls += 1
            body = self._client.post_json(
                "/embeddings",
                json={"model": self.model, "input": list(texts[i : i + 100]), "dimensions": DIMENSIONS},
            )
            data = sorted(body["data"], key=lambda d: d["index"])
            out.extend(d["embedding"] for d in data)
        return out


_default: Embedder | None = None


def get_embedder() -> Embedder:
    """The configured embedder (process-wide)."""
    global _default
    if _default is None:
        kind = os.environ.get("HISSUNO_EMBEDDER", "local").lower()
        if kind == "openai":
            key = os.environ.get("HISSUNO_EMBEDDINGS_API_KEY") or os.environ.get("OPENAI_API_KEY")
            if not key:
                msg = "HISSUNO_EMBEDDER=openai: expected HISSUNO_EMBEDDINGS_API_KEY or OPENAI_API_KEY to be set"
                raise ValueError(msg)
            _default = OpenAIEmbedder(
                os.environ.get("HISSUNO_EMBEDDINGS_BASE_URL", "https://api.openai.com/v1"), key,
                os.environ.get("HISSUNO_EMBEDDINGS_MODEL"),
            )
        elif kind == "local":
            _default = HashEmbedder()
        else:
            msg = f"HISSUNO_EMBEDDER: expected local or openai; got {kind!r}"
            raise ValueError(msg)
    return _default


def set_embedder(embedder: Embedder | None) -> None:
    """Replace the process-wide embedder (tests, embedding applications)."""
    global _default
    _default = embedder


def text_hash(text: str) -> str:
    """Hash of embedded text; a vector is recomputed only when this changes."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]
