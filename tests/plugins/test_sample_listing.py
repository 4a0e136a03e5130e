"""The sample provider's listing: in update order, made one conversation at a time."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from hissuno_airflow.plugins.sample import data

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _reference(src: data.SampleSource, size: int, since: datetime | None, until: datetime | None,
               now: datetime) -> list[tuple[str, str]]:
    """Every conversation made, filtered and sorted whole: what the streamed listing must equal."""
    revisions = data.load_revisions(src.workspace)
    out = []
    for i in range(size):
        if src.epoch + timedelta(seconds=i * src.every_seconds) > now:
            break
        if revisions.get(f"conv-{i}", {}).get("deleted"):
            continue
        conv = data.conversation(src, i, revisions)
        ts = datetime.fromisoformat(conv["updated_at"])
        if (since is None or ts >= since) and (until is None or ts < until) and ts <= now:
            out.append((conv["updated_at"], conv["id"]))
    return sorted(out)


@pytest.mark.parametrize("every", [60, 600, 3600])
def test_the_streamed_listing_is_the_sorted_listing_with_edits_and_deletions(tmp_path, monkeypatch, every):
    monkeypatch.setenv("HISSUNO_HOME", str(tmp_path))
    src = data.SampleSource(f"listing-{every}", EPOCH, every)
    size = 400
    now = EPOCH + timedelta(seconds=every * 350)  # the newest fifty are not created yet
    data.touch(src.workspace, ["conv-3", "conv-200", "conv-399"], EPOCH + timedelta(seconds=every * 120))
    data.touch(src.workspace, ["conv-17"], EPOCH - timedelta(days=1))  # edited into the past: first
    data.delete(src.workspace, ["conv-5", "conv-250"], EPOCH + timedelta(seconds=every * 300))
    windows = [(None, None), (EPOCH + timedelta(seconds=every * 100), EPOCH + timedelta(seconds=every * 200))]
    for since, until in windows:
        got = [(c["updated_at"], c["id"]) for c in data.conversations(src, size=size, since=since, until=until,
                                                                       now=now)]
        assert got == _reference(src, size, since, until, now)
        assert data.count_conversations(src, size=size, since=since, until=until, now=now) == len(got)
    assert len(got) > 50


def test_the_listing_holds_a_window_not_the_whole(tmp_path, monkeypatch):
    # Ten times the conversations, about the same memory at the deepest point of the listing.
    monkeypatch.setenv("HISSUNO_HOME", str(tmp_path))
    src = data.SampleSource("listing-memory", EPOCH, 60)
    peaks = []
    for size in (2_000, 20_000):
        tracemalloc.start()
        n = sum(1 for _ in data.conversations(src, size=size, since=None, until=None))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert n == size
    assert peaks[1] < 1.5 * peaks[0], peaks
