"""The shared fake base: deterministic 429/5xx injection, hooks between pages, records with provider times."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fakes.server import FakeClock, FakeProvider, FakeRequest, RecordSet, Reply, get


class Feed(FakeProvider):
    """Records by ``updated_at``, two per page, ``?page=&updated_since=``."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock.time)
        self.items = RecordSet(clock.time, fmt=int)
        self.items.add_many(4, lambda i: {"title": f"item {i + 1}"})

    @get("/items")
    def list_items(self, req: FakeRequest) -> Reply:
        since = req.query.get("updated_since")
        rows = self.items.by_updated(float(since) if since else None)
        page = int(req.query.get("page", "1"))
        return {"items": rows[(page - 1) * 2 : page * 2], "more": page * 2 < len(rows)}

    @get("/ping")
    def ping(self, req: FakeRequest) -> Reply:
        return {"ok": True}


@pytest.fixture
def feed() -> Feed:
    return Feed(FakeClock())


def statuses(fake: FakeProvider, n: int, path: str = "/ping") -> list[int]:
    with httpx.Client(transport=fake.transport(), base_url="http://fake") as c:
        return [c.get(path).status_code for _ in range(n)]


def test_rate_limit_every_nth_request_with_retry_after(feed: Feed) -> None:
    fault = feed.rate_limit(every=3, retry_after=12)
    assert statuses(feed, 9) == [200, 200, 429] * 3
    with httpx.Client(transport=feed.transport(), base_url="http://fake") as c:
        c.get("/ping")
        c.get("/ping")
        limited = c.get("/ping")
    assert limited.headers["Retry-After"] == "12" and limited.json()["error"] == "ratelimited"
    assert fault.hits == 4
    feed.faults.remove(fault)
    assert statuses(feed, 3) == [200] * 3


def test_rate_limit_a_fraction_is_exact_spread_and_repeatable() -> None:
    runs = []
    for _ in range(2):
        fake = Feed(FakeClock())
        fake.rate_limit(fraction=0.25, path="/ping")
        runs.append(statuses(fake, 100))
    assert runs[0] == runs[1]
    hits = [i + 1 for i, s in enumerate(runs[0]) if s == 429]
    assert len(hits) == 25 and hits[:3] == [4, 8, 12]
    fake = Feed(FakeClock())
    fake.rate_limit(fraction=0.4)
    assert statuses(fake, 5) == [200, 200, 429, 200, 429]


def test_flaky_5xx_and_counted_faults(feed: Feed) -> None:
    feed.inject_5xx("/ping", status=502, times=None, every=2)
    assert statuses(feed, 6) == [200, 502] * 3
    once = feed.inject_5xx("/items", times=2)
    assert statuses(feed, 3, "/items") == [503, 503, 200] and once.times == 0
    with pytest.raises(ValueError):
        feed.rate_limit()


def test_records_change_between_pages(feed: Feed) -> None:
    def edit(req: FakeRequest) -> None:
        feed.items.update(1, title="item 1, edited")
        feed.items.add({"title": "item 5"})

    hook = feed.before_request("/items", edit, when=lambda r: r.query.get("page") == "2")
    with httpx.Client(transport=feed.transport(), base_url="http://fake") as c:
        first = c.get("/items", params={"page": 1}).json()["items"]
        second = c.get("/items", params={"page": 2}).json()["items"]
        cursor = max(r["updated_at"] for r in first + second)
        # Record 1 was read on page 1 before it changed; page 2 shifted under the client.
        assert [r["id"] for r in first] == [1, 2] and [r["id"] for r in second] == [4, 1]
        later = c.get("/items", params={"updated_since": cursor}).json()["items"]
    assert hook.runs == 1
    assert [r["id"] for r in later] == [5]
    assert feed.items.get(1)["title"] == "item 1, edited"
    assert first[0]["updated_at"] < feed.items.get(1)["updated_at"]


def test_record_times_strictly_increase_on_a_frozen_clock() -> None:
    clock = FakeClock(start=1_700_000_000)
    records = RecordSet(clock.time)
    a = records.add({"id": "a"})
    b = records.add({"id": "b"})
    assert a["updated_at"] == "2023-11-14T22:13:20Z" and b["updated_at"] == "2023-11-14T22:13:21Z"
    records.update("a", status="closed")
    assert [r["id"] for r in records.by_updated()] == ["b", "a"]
    assert [r["id"] for r in records.by_updated(since=records.stamps["b"])] == ["a"]
    assert records.get("a")["created_at"] == "2023-11-14T22:13:20Z"
    with pytest.raises(KeyError):
        records.add({"id": "a"})
    records.delete("b")
    assert len(records) == 1 and "b" in records.deleted


def test_expire_token_answers_token_expired() -> None:
    fake = FakeProvider()
    t = fake.issue_token()
    req = FakeRequest("GET", "/", [], {"authorization": f"Bearer {t}"}, b"", "http://fake")
    assert fake.check_bearer(req) is None
    fake.expire_token(t)
    refused: Any = fake.check_bearer(req)
    assert refused.status == 401 and refused.json["error"] == "token_expired"
