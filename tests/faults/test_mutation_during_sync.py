"""Fault: the provider's data changes while a sync pages through it.

For each provider, the fake updates a record the run has already read (it jumps to the end of an
ascending update-time listing, so everything after it shifts one place) and adds a new record, before
every page after the first. The run finishes; then an incremental run starts from the cursor the first
one left. Afterwards the store holds exactly the provider's final state: every record the fake says the
plugin should hold, once, with its latest content, and nothing else. A listing that pages by offset
loses the record that shifted across a page boundary, and a cursor past it never comes back for it:
this is the test that notices.

Real HTTP on 127.0.0.1 through ``run_stream_sync``; every retry waits on the fake's clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from tests.fakes.server import FakeClock, FakeRequest
from tests.faults.providers import CASES, T0, held
from tests.fixtures.fakes import retries_on

MUTATIONS = 4
"""Pages after the first that each see one update and one addition."""


@pytest.mark.parametrize("provider", sorted(CASES))
def test_changes_during_a_sync_are_all_picked_up_by_the_next_incremental_run(
    provider: str, store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    case = CASES[provider](store, monkeypatch, serve_fake, clock)
    enable_stream(store, case.cid, case.stream, filters=case.filters)

    def mutate(req: FakeRequest) -> None:
        # The record changed longest ago changes: in an oldest-first listing it was read first and moves to
        # the end, everything behind it shifting one place; in a newest-first one it moves onto page one.
        target = case.oldest()
        title = f"Mutated {len(case.renamed) + 1} ({provider})"
        case.rename(target, title, None)
        case.renamed[target] = title
        case.add()

    hook = case.fake.before_request(case.listing, mutate, times=MUTATIONS, when=case.later_page)
    first = run_stream_sync(case.cid, case.stream, store=store)
    assert first.status == "success", first.error
    assert hook.runs == MUTATIONS, f"the listing had {hook.runs + 1} pages; the test wants more than {MUTATIONS}"
    case.fake.hooks.remove(hook)

    clock.advance(3600)  # past any "changes of the last minute are not listed yet" delay
    second = run_stream_sync(case.cid, case.stream, store=store)
    assert second.status == "success", second.error

    now = held(store, case)
    expected = case.held_ids()
    assert set(now) == expected, (f"missing {sorted(expected - set(now))}, unexpected {sorted(set(now) - expected)}")
    assert all(len(names) == 1 for names in now.values())
    stale = {k: (now[ext][0], title) for k, title in case.renamed.items()
             if title not in now[ext := case.external_id(k)][0]}
    assert not stale, f"records holding an old title (held, latest): {stale}"

    again = run_stream_sync(case.cid, case.stream, store=store)
    assert again.status == "success" and again.counts["synced"] == 0, again.counts
    assert held(store, case) == now


@pytest.mark.parametrize("provider", sorted(CASES))
def test_a_change_stamped_at_the_cursor_itself_is_not_lost(
    provider: str, store: Any, serve_fake: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Providers stamp in whole seconds (or minutes): a record can change in the very instant of the newest
    one a run read, after the run read it. The cursor is that instant, so the next run must read it again
    (inclusive) and tell the changed record from the ones it already holds."""
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    case = CASES[provider](store, monkeypatch, serve_fake, clock)
    enable_stream(store, case.cid, case.stream, filters=case.filters)
    first = run_stream_sync(case.cid, case.stream, store=store)
    assert first.status == "success" and first.cursor_after is not None, first.error

    rs = case.records
    newest = max(case.expected(), key=lambda k: (rs.stamps[k], k))
    target = case.oldest()
    assert target != newest
    title = f"Changed at the cursor ({provider})"
    case.rename(target, title, rs.stamps[newest])
    assert rs.stamps[target] == rs.stamps[newest]
    clock.advance(3600)
    second = run_stream_sync(case.cid, case.stream, store=store)

    assert second.status == "success", second.error
    now = held(store, case)
    assert set(now) == case.held_ids()
    assert title in now[case.external_id(target)][0], f"{target} still holds {now[case.external_id(target)][0]!r}"
    assert second.counts["synced"] == 1, second.counts

