"""Filters and settings: unknown keys are refused when a user writes them, and tolerated when read back."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from hissuno_airflow.kit.errors import InputError
from hissuno_airflow.runtime.streams import validated_config
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store import connections as repo


class Window(BaseModel):
    days: int = 7


class Filters(BaseModel):
    team: str | None = None
    window: Window = Window()
    nested_opt: Window | None = None


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")

    known: int = 1


def test_unknown_keys_are_refused_at_any_depth_naming_the_path() -> None:
    assert validated_config(Filters, {"team": "a", "window": {"days": 3}}, "filters")["window"] == {"days": 3}
    for raw, path in (({"tema": "a"}, "filters.tema"), ({"window": {"dayz": 3}}, "filters.window.dayz"),
                      ({"nested_opt": {"x": 1}}, "filters.nested_opt.x")):
        with pytest.raises(InputError) as err:
            validated_config(Filters, raw, "filters")
        assert err.value.field == path and str(err.value).startswith(f"{path}: unknown field; expected ")


def test_a_model_that_declares_extra_allow_keeps_its_extra_keys() -> None:
    assert validated_config(Open, {"known": 2, "free": "x"}, "settings") == {"known": 2, "free": "x"}


def test_a_stored_row_with_a_key_from_before_still_syncs(store: Any, sample_connection: Any) -> None:
    # Rows written before unknown keys were refused may hold one: scheduled runs ignore it.
    repo.upsert_stream(store, connection_id=sample_connection.id, plugin_id="sample", stream_id="sessions",
                       stream_kind="sessions", enabled=True, filter_config={"size": 4, "legacy": True},
                       settings={"old": 1})
    result = run_stream_sync(sample_connection.id, "sessions", store=store)
    assert result.status == "success" and result.counts["found"] == 4, result.error
