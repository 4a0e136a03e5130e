"""The run's packed map of what its stream synced before (store/synced_map.py)."""

from __future__ import annotations

import hashlib
import tracemalloc
import uuid

import pytest

from hissuno_airflow.store.synced_map import SyncedMap


def _entry(i: int) -> tuple[str, str]:
    return str(uuid.uuid4()), hashlib.sha256(str(i).encode()).hexdigest()[:32]


def test_entries_come_back_as_they_went_in_by_kind_and_external_id():
    m = SyncedMap()
    a, b = _entry(1), _entry(2)
    m[("sessions", "42")] = a
    m[("contacts", "42")] = b  # one external id, two kinds: two entries
    assert m.get(("sessions", "42")) == a and m.get(("contacts", "42")) == b
    assert m.get(("issues", "42")) is None and m.get(("sessions", "43")) is None
    assert m[("sessions", "42")] == a
    with pytest.raises(KeyError):
        m[("issues", "42")]
    assert ("sessions", "42") in m and ("issues", "42") not in m and "42" not in m
    assert sorted(m) == [("contacts", "42"), ("sessions", "42")] and len(m) == 2
    m[("sessions", "42")] = b  # an update replaces
    assert m.get(("sessions", "42")) == b and len(m) == 2


def test_values_that_do_not_pack_back_to_their_text_are_kept_as_text():
    m = SyncedMap()
    odd = [
        (str(uuid.uuid4()), hashlib.sha256(b"x").hexdigest()),  # a full-length hash of an older version
        (str(uuid.uuid4()).upper(), "ab" * 16),  # an id not in PostgreSQL's canonical text
        (str(uuid.uuid4()), ("AB" * 16)),  # upper-case hex
        (str(uuid.uuid4()), "not hex at all"),
        (str(uuid.uuid4()), "ab" * 15 + "  "),  # hex with spaces (``bytes.fromhex`` skips them)
        ("{" + str(uuid.uuid4()) + "}", "ab" * 16),  # forms ``uuid.UUID`` reads but does not write
        (uuid.uuid4().hex, "ab" * 16),
        ("----" + uuid.uuid4().hex, "ab" * 16),  # 36 characters, the dashes elsewhere
    ]
    for i, value in enumerate(odd):
        m[("issues", str(i))] = value
    assert [m.get(("issues", str(i))) for i in range(len(odd))] == odd


def test_an_entry_takes_less_than_half_the_memory_of_a_tuple_of_strings():
    def measure(build):  # bytes an entry, of 20,000
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            held = build()
            size = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert held is not None
        return size / 20_000

    entries = [(f"{100_000 + i}", _entry(i)) for i in range(20_000)]

    def packed():
        m = SyncedMap()
        for ext, (hid, h) in entries:
            m[("sessions", ext)] = (hid.encode().decode(), h.encode().decode())  # fresh, as rows bring them
        return m

    def tuples():
        return {("sessions", ext): (hid.encode().decode(), h.encode().decode()) for ext, (hid, h) in entries}

    # The external ids exist already (both hold them alike); what each structure adds is measured.
    packed_size, tuple_size = measure(packed), measure(tuples)
    assert packed_size < tuple_size / 2, (packed_size, tuple_size)
