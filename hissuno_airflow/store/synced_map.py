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
    # Packed only from the canonical text (lower-case hex, the UUID's dashes where ``str(UUID)`` puts
    # them), which is what unpacking gives back; checked on the text (unpacking to compare cost a third
    # of a new record's entry).
    if not (len(hid) == 36 and hid[8] == hid[13] == hid[18] == hid[23] == "-" and len(content_hash) == 32
            and hid == hid.lower() and content_hash == content_hash.lower()):
        return hid, content_hash
    try:
        packed = uuid.UUID(hid).bytes + bytes.fromhex(content_hash)
    except ValueError:
        return hid, content_hash
    return packed if len(packed) == 32 else (hid, content_hash)


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
