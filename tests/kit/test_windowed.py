"""windowed_search against a capped, HubSpot-shaped search fake on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hissuno_airflow.kit.errors import ProviderResponseError, SearchCapExceeded
from hissuno_airflow.kit.http import CursorPaginator, ProviderClient, windowed_search
from tests.fakes.server import FakeProvider, FakeRequest, Reply, post
from tests.kit.conftest import TOKEN

Make = Callable[..., ProviderClient]
CAP = 10
PAGE = 4

# 35 records; ties straddle the window boundaries: ids 9-12 share 9 and ids 17-22 share 17, and with
# ties served in descending id order windows end after ids 12, 11 (at 9) and after 22, 21 (at 17).
TIMES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9, 13, 14, 15, 16, 17, 17, 17, 17, 17, 17,
         23, 24, 25, 26, 27, 28, 29, 29, 31, 32, 33, 34, 35]  # fmt: skip


class CappedSearch(FakeProvider):
    """``POST /search``: ``updated >= since`` sorted ascending, paged by ``after``, capped at ``cap`` results.

    Ties are returned in descending id order, so nothing may rely on the position of a record among its
    ties. Paging past the cap is a 400, as HubSpot answers ``after=10000``.
    """

    name = "capped"
    require_auth = True

    def __init__(self, times: list[int], cap: int = CAP) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = [{"id": str(i), "updated": t} for i, t in enumerate(times, start=1)]
        self.cap = cap

    def windows(self) -> list[Any]:
        """The ``since`` of every window started (first page requests)."""
        return [r.json().get("since") for r in self.requests_to("/search") if not r.json().get("after")]

    @post("/search")
    def search(self, req: FakeRequest) -> Reply:
        body = req.json()
        since, after, limit = body.get("since"), int(body.get("after") or 0), int(body["limit"])
        if after >= self.cap:
            return 400, {"status": "error", "message": f"after must be below {self.cap}"}
        rows = [r for r in self.records if since is None or r["updated"] >= since]
        rows.sort(key=lambda r: (r["updated"], -int(r["id"])))
        page = rows[after : min(after + limit, self.cap)]
        reply: dict[str, Any] = {"total": len(rows), "results": page}
        end = after + len(page)
        if end < len(rows):
            # Like HubSpot, the last page under the cap still links to the next one, which then fails.
            reply["paging"] = {"next": {"after": str(end)}}
        return reply


@pytest.fixture
def serve_search(serve_fake: Callable[[CappedSearch], CappedSearch]) -> Callable[[list[int]], CappedSearch]:
    def make(times: list[int]) -> CappedSearch:
        fake = serve_fake(CappedSearch(times))
        fake.issue_token(TOKEN)
        return fake

    return make


def window_reader(client: ProviderClient, *, max_windows: int = 20) -> Callable[[int | None], Iterator[dict[str, Any]]]:
    """One search window through the client; fails the test instead of looping forever."""
    started = 0

    def window(since: int | None) -> Iterator[dict[str, Any]]:
        nonlocal started
        started += 1
        assert started <= max_windows, "windowed_search did not terminate"
        paginator = CursorPaginator("paging.next.after", "after", cursor_location="json")
        return client.paginate("POST", "/search", paginator, json={"since": since, "limit": PAGE}, data_path="results")

    return window


def read(client: ProviderClient, since: int | None = None) -> list[dict[str, Any]]:
    return list(
        windowed_search(
            window_reader(client), cap=CAP, key=lambda r: int(r["updated"]), record_id=lambda r: r["id"], since=since
        )
    )


def test_a_full_read_past_the_cap_gets_every_record_exactly_once(
    serve_search: Callable[[list[int]], CappedSearch], make_client: Make
) -> None:
    fake = serve_search(TIMES)
    got = read(make_client(fake.url))
    assert sorted(int(r["id"]) for r in got) == list(range(1, 36))
    assert len(got) == 35
    assert [r["updated"] for r in got] == sorted(r["updated"] for r in got)
    # Each new window starts at the last update time of the previous one.
    assert fake.windows() == [None, 9, 17, 26, 35]
    # A window stops at the cap: nobody asks for the page past it (which the fake, like HubSpot, refuses).
    assert max(int(r.json().get("after") or 0) for r in fake.requests_to("/search")) < CAP


def test_since_is_the_first_windows_inclusive_bound(
    serve_search: Callable[[list[int]], CappedSearch], make_client: Make
) -> None:
    fake = serve_search(TIMES)
    got = read(make_client(fake.url), since=17)
    assert sorted(int(r["id"]) for r in got) == list(range(17, 36))
    assert fake.windows() == [17, 26, 35]


def test_a_record_updated_between_windows_is_read_again_as_its_new_version(
    serve_search: Callable[[list[int]], CappedSearch], make_client: Make
) -> None:
    fake = serve_search(TIMES)
    client = make_client(fake.url)
    window = window_reader(client)

    def touching(since: int | None) -> Iterator[dict[str, Any]]:
        if since == 9:  # between the first and second window, records 11 (read at 9) and 3 change
            fake.records[10]["updated"] = 40
            fake.records[2]["updated"] = 41
        return window(since)

    got = list(windowed_search(touching, cap=CAP, key=lambda r: int(r["updated"]), record_id=lambda r: r["id"]))
    pairs = [(r["id"], r["updated"]) for r in got]
    assert len(pairs) == len(set(pairs)) == 37
    assert ("11", 9) in pairs and ("11", 40) in pairs and ("3", 41) in pairs


def test_more_ties_than_the_cap_raise_instead_of_looping(
    serve_search: Callable[[list[int]], CappedSearch], make_client: Make
) -> None:
    fake = serve_search([1, 2, 3] + [5] * 12 + [6, 7])
    got: list[dict[str, Any]] = []
    with pytest.raises(SearchCapExceeded) as info:
        for record in windowed_search(
            window_reader(make_client(fake.url)), cap=CAP, key=lambda r: int(r["updated"]), record_id=lambda r: r["id"]
        ):
            got.append(record)
    err = info.value
    assert (err.at, err.cap) == (5, 10)
    assert str(err) == "at least 10 records share the update time 5; a search capped at 10 results cannot read past it"
    assert isinstance(err, ProviderResponseError)
    assert fake.windows() == [None, 5]
    # Everything before the crowded instant was read, and of it 10 records, none twice.
    assert [r["id"] for r in got[:3]] == ["1", "2", "3"]
    assert len(got) == len({r["id"] for r in got}) == 13


def test_exactly_cap_records_end_after_one_more_window(
    serve_search: Callable[[list[int]], CappedSearch], make_client: Make
) -> None:
    fake = serve_search(list(range(1, 11)))
    assert [r["id"] for r in read(make_client(fake.url))] == [str(i) for i in range(1, 11)]
    assert fake.windows() == [None, 10]


def test_unsorted_results_are_refused() -> None:
    rows: list[dict[str, Any]] = [{"id": "a", "updated": 2}, {"id": "b", "updated": 1}]
    with pytest.raises(ProviderResponseError, match=r"hubspot: search results are not sorted by update time \(1 after 2\)"):
        list(windowed_search(lambda since: rows, cap=5, key=lambda r: r["updated"], record_id=lambda r: r["id"], provider="hubspot"))


def test_a_window_returning_records_before_its_bound_is_refused() -> None:
    calls: list[int | None] = []

    def window(since: int | None) -> list[dict[str, Any]]:
        calls.append(since)
        assert len(calls) <= 3, "windowed_search did not terminate"
        return [{"id": str(i), "updated": i} for i in range(1, 4)]  # ignores ``since``

    with pytest.raises(ProviderResponseError, match="search window from 3 returned a record updated at 1"):
        list(windowed_search(window, cap=3, key=lambda r: int(r["updated"]), record_id=lambda r: r["id"]))


def _paged(client: ProviderClient, fake: CappedSearch, touch: Callable[[int], None] | None = None,
           ) -> list[dict[str, Any]]:
    window = window_reader(client)
    pages = 0

    def touching(since: int | None) -> Iterator[dict[str, Any]]:
        nonlocal pages
        pages += 1
        if touch is not None:
            touch(pages)
        return window(since)

    return list(windowed_search(touching, cap=CAP, page=PAGE, key=lambda r: int(r["updated"]),
                                record_id=lambda r: r["id"]))


def test_a_window_per_page_skips_nothing_when_a_record_already_read_changes_mid_read(
    serve_search: Callable[[list[int]], CappedSearch], make_client: Make
) -> None:
    times = list(range(1, 21))
    fake = serve_search(times)

    def touch(page: int) -> None:
        if page in (2, 3):  # the first record read jumps to the end: offsets behind it shift back one place
            fake.records[page - 2]["updated"] = 40 + page

    got = _paged(make_client(fake.url), fake, touch)
    assert {r["id"] for r in got} == {str(i) for i in range(1, 21)}
    assert ("1", 42) in [(r["id"], r["updated"]) for r in got]
    # Pages by offset would have skipped the record that shifted across the page boundary.
    assert all(not r.json().get("after") for r in fake.requests_to("/search"))


def test_a_page_of_one_update_time_is_read_on_as_a_wider_window(
    serve_search: Callable[[list[int]], CappedSearch], make_client: Make
) -> None:
    fake = serve_search([1, 2] + [5] * 6 + [6, 7])
    got = _paged(make_client(fake.url), fake)
    assert sorted(int(r["id"]) for r in got) == list(range(1, 11)) and len(got) == 10
    # The page from 5 is four 5s: the window from 5 is asked again and read on (after=4) up to the first
    # record past 5, then windows of one page go on from 6.
    assert fake.windows() == [None, 5, 5, 6]
    assert [(r.json().get("since"), r.json().get("after")) for r in fake.requests_to("/search")] == [
        (None, None), (5, None), (5, None), (5, "4"), (6, None)]
