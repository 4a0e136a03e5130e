"""Embedders: an offline model by default, a lexical hash fallback and an OpenAI-compatible HTTP embedder.

``HISSUNO_EMBEDDER=wordllama`` (default; ``local`` is the same) loads the static embedding model that
ships inside the ``wordllama`` wheel (256 dimensions, 16 MB): no network, no download, ever. It knows
that "cannot sign in" and "login loop after SSO" are about the same thing. ``HISSUNO_EMBEDDER=hash``
is the former default: signed feature hashing of word unigrams and bigrams, lexical only.
``HISSUNO_EMBEDDER=openai`` calls ``/embeddings`` of ``HISSUNO_EMBEDDINGS_BASE_URL`` (default OpenAI)
with ``HISSUNO_EMBEDDINGS_API_KEY`` or ``OPENAI_API_KEY`` and model ``HISSUNO_EMBEDDINGS_MODEL`` (default
``text-embedding-3-small``); vectors at the model's own size unless ``HISSUNO_EMBEDDINGS_DIMENSIONS`` asks
for another (see ``OpenAIEmbedder``).

Every vector is stored at its model's own size (``embeddings.embedding`` is a ``vector`` without a fixed
size; ``embeddings.dims`` records it), and each (entity type, size) pair has its own HNSW index over
``embedding::vector(<size>)`` (``store/enrich.py``). Until migration 0012 vectors were zero-padded to 1536:
the default model's 256 numbers then cost six times the bytes, index build and distance work.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import zlib
from collections.abc import Sequence
from itertools import chain, pairwise
from typing import Any, Protocol

from ..kit.errors import ProviderError

DIMENSIONS = 1536
"""The size of the hash embedder's vectors and of OpenAI's ``text-embedding-3`` ones (asked for)."""
MAX_DIMENSIONS = 2000
"""The most numbers a vector may have: pgvector's HNSW indexes ``vector`` up to 2,000 dimensions."""
_WORD = re.compile(r"[a-z0-9][a-z0-9'_-]*")
_STOP = frozenset(
    ["a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "for", "with", "is", "are", "was", "were", "be", "been", "it", "this", "that", "i", "you", "we", "they", "he", "she", "my", "our", "your", "their", "me", "us", "them", "so", "as", "by", "from", "not", "no", "do", "does", "did", "have", "has", "had", "can", "could", "would", "should", "will", "just", "about", "into", "than", "then", "there", "here", "what", "when", "which", "who", "how", "all", "any", "some"]
)


class Embedder(Protocol):
    """Turns texts into vectors of ``dims`` floats."""

    model: str
    graph_threshold: float
    """Cosine similarity from which two entities get a semantic edge (a property of the model's scale)."""

    @property
    def dims(self) -> int:
        """The size of the vectors (read-only: an OpenAI-compatible model's is learnt from its answer)."""
        ...

    def embed(self, texts: Sequence[str]) -> list[Any]:
        """One vector per text: a list of floats or a numpy row, ``dims`` long."""
        ...


class HashEmbedder:
    """Deterministic local embedder (feature hashing of unigrams and bigrams, signed, L2-normalised)."""

    model = "hissuno-hash-v2"
    dims = DIMENSIONS
    graph_threshold = 0.6  # the original's value, chosen for word overlap

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

    Vector size: ``dims`` when given (``HISSUNO_EMBEDDINGS_DIMENSIONS``; sent as ``dimensions``, which
    OpenAI's ``text-embedding-3`` models honour by shortening), else 1536 for ``text-embedding-3-*`` (the
    former fixed size), else the model's own size, learnt from its first answer: other models and most
    OpenAI-compatible servers (Ollama, vLLM, LM Studio) answer at their native size, and some refuse the
    ``dimensions`` parameter outright, as OpenAI does for ``text-embedding-ada-002``.
    """

    model = "text-embedding-3-small"
    graph_threshold = 0.6  # the original's value for this model (not measured here)

    def __init__(self, base_url: str, api_key: str, model: str | None = None, timeout: float = 60.0,
                 retry: Any = None, dims: int | None = None) -> None:
        from ..kit.http import BearerAuth, ProviderClient

        self.model = model or self.model
        if dims is not None and not 1 <= dims <= MAX_DIMENSIONS:
            msg = f"HISSUNO_EMBEDDINGS_DIMENSIONS: expected 1 to {MAX_DIMENSIONS}; got {dims}"
            raise ValueError(msg)
        self._request_dims = dims if dims is not None else (
            DIMENSIONS if self.model.startswith("text-embedding-3") else None)
        self._dims = self._request_dims
        self._client = ProviderClient("embeddings", base_url.rstrip("/"), auth=BearerAuth(api_key),
                                      timeout=timeout, retry=retry)
        self.calls = 0

    @property
    def dims(self) -> int:
        """The size of this model's vectors (one call to the endpoint when it is not known yet)."""
        if self._dims is None:
            self.embed(["size probe"])
        assert self._dims is not None
        return self._dims

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed texts in batches of 100."""
        out: list[list[float]] = []
        for i in range(0, len(texts), 100):
            self.calls += 1
            payload: dict[str, Any] = {"model": self.model, "input": list(texts[i : i + 100])}
            if self._request_dims is not None:
                payload["dimensions"] = self._request_dims
            body = self._client.post_json("/embeddings", json=payload)
            data = sorted(body["data"], key=lambda d: d["index"])
            for d in data:
                self._check_size(len(d["embedding"]))
            out.extend(d["embedding"] for d in data)
        return out

    def _check_size(self, n: int) -> None:
        if self._dims is None:
            if not 1 <= n <= MAX_DIMENSIONS:
                msg = (f"embeddings model {self.model!r} answers {n}-number vectors; at most {MAX_DIMENSIONS}"
                       " can be indexed: set HISSUNO_EMBEDDINGS_DIMENSIONS (if the model can shorten them)"
                       " or choose another HISSUNO_EMBEDDINGS_MODEL")
                raise ProviderError(msg, provider="embeddings")
            self._dims = n
        elif n != self._dims:
            msg = (f"embeddings model {self.model!r}: expected {self._dims}-number vectors; got {n}"
                   " (does the endpoint honour HISSUNO_EMBEDDINGS_DIMENSIONS?)")
            raise ProviderError(msg, provider="embeddings")


class WordLlamaEmbedder:
    """The offline default: wordllama's bundled static model (256 dimensions), L2-normalised.

    wordllama 0.4.0's ``WordLlama.load()`` looks for its bundled tokenizer in the wrong folder and then
    downloads it; pointing ``cache_dir`` at the installed package and disabling downloads finds both
    the weights and the tokenizer inside the wheel."""

    model = "wordllama-l2-supercat-256"
    dims = 256
    # Measured by bench/search_quality.py over the 28,800 cross-type pairs of its 300 records: at 0.55,
    # 74% of the pairs above it share a topic (0.20% of different-topic pairs pass, 16% of same-topic
    # pairs); 0.5 lets four times as many wrong pairs through (55%), 0.6 halves the right ones.
    graph_threshold = 0.55

    def __init__(self) -> None:
        # The weights load at the first ``embed``, not here: most scheduled syncs of a deployment ingest
        # nothing new, or only records whose text is embedded already, and each Airflow task is a fresh
        # process. Loading them cost every such run 1.1 CPU-seconds and 93 MB it never used; the model's
        # name and size (what a run needs to find its stored vectors) are known without them.
        self._wl: Any = None
        self._load_lock = threading.Lock()
        self.calls = 0

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory (they load at the first ``embed``)."""
        return self._wl is not None

    def _model(self) -> Any:
        with self._load_lock:  # one load, however many threads (the web server's) embed at once
            if self._wl is None:
                import wordllama

                folder = os.path.dirname(wordllama.__file__)
                wl = wordllama.WordLlama.load(config="l2_supercat", dim=self.dims, cache_dir=folder,
                                              disable_download=True)
                wl.tokenizer.no_padding()  # ``embed`` below pools each text's own tokens (no pad tokens)
                self._wl = wl
            return self._wl

    def embed(self, texts: Sequence[str]) -> list[Any]:
        """Embed each text as a numpy row (converting the floats to a list cost 4x the model itself);
        a text without known tokens becomes a fixed unit vector, as with the hash embedder."""
        self.calls += 1
        if not texts:
            return []
        import numpy as np

        # Mean of the token vectors, computed over the concatenated tokens of every text: wordllama's own
        # ``embed`` pads each batch to its longest text, so one long session among short ones made a
        # batch cost (and allocate) as if every text were that long.
        # One text at a time, not ``encode_batch``: its parallel threads cost 40% more CPU for 30% less wall
        # time, and each thread's allocator arena stays at its high-water mark: a sync's peak memory grew
        # by 50 MB past its first enrichment pass (measured: flat at 176 MB one at a time, 225 MB in batch).
        wl = self._wl if self._wl is not None else self._model()
        encode = wl.tokenizer.encode
        encs = [encode(text, add_special_tokens=False) for text in texts]
        lens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        ids = np.fromiter(chain.from_iterable(e.ids for e in encs), dtype=np.int64, count=int(lens.sum()))
        table = wl.embedding
        np.clip(ids, 0, table.shape[0] - 1, out=ids)
        sums = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
        starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
        nonempty = lens > 0
        if ids.size:
            sums[nonempty] = np.add.reduceat(table[ids], starts[nonempty], axis=0)
        arr = sums / np.maximum(lens, 1)[:, None].astype(np.float32)
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        out = np.divide(arr, norms, out=np.zeros_like(arr), where=norms > 0)
        out[norms[:, 0] == 0, 0] = 1.0
        return list(out)


_default: Embedder | None = None


def get_embedder() -> Embedder:
    """The configured embedder (process-wide)."""
    global _default
    if _default is None:
        kind = os.environ.get("HISSUNO_EMBEDDER", "wordllama").lower()
        if kind == "openai":
            key = os.environ.get("HISSUNO_EMBEDDINGS_API_KEY") or os.environ.get("OPENAI_API_KEY")
            if not key:
                msg = "HISSUNO_EMBEDDER=openai: expected HISSUNO_EMBEDDINGS_API_KEY or OPENAI_API_KEY to be set"
                raise ValueError(msg)
            raw = os.environ.get("HISSUNO_EMBEDDINGS_DIMENSIONS") or None
            if raw is not None and not raw.strip().isdigit():
                msg = f"HISSUNO_EMBEDDINGS_DIMENSIONS: expected a whole number from 1 to {MAX_DIMENSIONS}; got {raw!r}"
                raise ValueError(msg)
            _default = OpenAIEmbedder(
                os.environ.get("HISSUNO_EMBEDDINGS_BASE_URL", "https://api.openai.com/v1"), key,
                os.environ.get("HISSUNO_EMBEDDINGS_MODEL") or None, dims=int(raw) if raw else None,
            )
        elif kind in ("wordllama", "local"):
            _default = WordLlamaEmbedder()
        elif kind == "hash":
            _default = HashEmbedder()
        else:
            msg = f"HISSUNO_EMBEDDER: expected wordllama (default), hash or openai; got {kind!r}"
            raise ValueError(msg)
    return _default


def set_embedder(embedder: Embedder | None) -> None:
    """Replace the process-wide embedder (tests, embedding applications)."""
    global _default
    _default = embedder


def text_hash(text: str) -> str:
    """Hash of embedded text; a vector is recomputed only when this changes."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]
