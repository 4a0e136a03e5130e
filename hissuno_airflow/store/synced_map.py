"""What a stream synced before, held by a run: (kind, external id) -> (entity id, content hash), packed.

A run keeps one entry for every record its stream ever synced (the dedup map that tells "created",
"updated" and "unchanged" apart without a round trip a record). As tuples of strings that is about 390 bytes
an entry, 38 MB at 100,000 records, and it was most of the growth of a long sync's peak memory. Packed, the
entity's UUID and the 32-hex content hash are 32 bytes under the external id, in one dict per kind: about
160 bytes an entry. Values that do not pack back to the same text (a hash of another length, written by an
older version) are kept as they are.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

Key = tuple[str, str]
"""(hissuno kind, external id)."""


def _pack(hid: str, content_hash: str) -> bytes | tuple[str, str]:
    try:
        packed = uuid.UUID(hid).bytes + bytes.fromhex(content_hash)
    except ValueError:
        return hid, content_hash
    if len(packed) != 32 or _unpack(packed) != (hid, content_hash):
        return hid, content_hash  # not in the canonical text it came in: keep that text
    return packed


def _unpack(value: bytes) -> tuple[str, str]:
    return str(uuid.UUID(bytes=value[:16])), value[16:].hex()


class SyncedMap:
    """A mapping of (kind, external id) to (entity id, content hash), stored packed (see the module)."""

    __slots__ = ("_kinds",)

    def __init__(self) -> None:
        self._kinds: dict[str, dict[str, bytes | tuple[str, str]]] = {}

    def get(self, key: Key) -> tuple[str, str] | None:
        """The (entity id, content hash) synced from ``key``, or None."""
        kind = self._kinds.get(key[0])
        value = None if kind is None else kind.get(key[1])
        if value is None or isinstance(value, tuple):
            return value
        return _unpack(value)

    def __getitem__(self, key: Key) -> tuple[str, str]:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Key, value: tuple[str, str]) -> None:
        self._kinds.setdefault(key[0], {})[key[1]] = _pack(*value)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        kind = self._kinds.get(key[0])
        return kind is not None and key[1] in kind

    def __iter__(self) -> Iterator[Key]:
        for kind, entries in self._kinds.items():
            for ext in entries:
                yield kind, ext

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._kinds.values())
