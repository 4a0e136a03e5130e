"""Stream definitions: what data flows from a provider into Hissuno."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .types import Frequency, StreamKind

Handler = Callable[..., Any]
"""A plain or ``async`` function taking one context argument."""


class StreamInstance(BaseModel):
    """One instance of a parameterized stream (a repo, a team, a channel)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    """Instance id; the stream id becomes ``<key>:<id>``."""
    label: str
    """Human label."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Anything the picker wants to show."""


@dataclass(frozen=True, kw_only=True)
class Stream:
    """A single pipeline of data from the provider into Hissuno.

    A plain frozen dataclass on purpose: ``define_plugin`` validates every stream and reports problems
    naming the plugin and the stream, which a validating constructor here could not do.
    """

    kind: StreamKind
    """Which ingest primitive the stream mainly uses."""
    label: str
    """Display label."""
    description: str | None = None
    """One line shown in the marketplace and in the DAG docs."""
    sync: Handler | None = None
    """``sync(ctx: SyncCtx)``: scheduled or manual pull."""
    webhook: Handler | None = None
    """``webhook(ctx: WebhookCtx)``: handles one verified event."""
    fetch: Handler | None = None
    """``fetch(ctx: SyncCtx, external_id: str)``: re-fetch one record of the stream's kind by its external id
    and ingest it with ``ctx.ingest`` (as ``sync`` would). Optional; a replay of a failed record uses it
    when present (so a fixed mapping or fixed provider data is read again), else re-ingests the kept record."""
    instances: Handler | None = None
    """``instances(ctx: ListCtx) -> list[StreamInstance]`` for parameterized streams."""
    frequencies: tuple[Frequency, ...] | None = None
    """Allowed frequencies; default manual/1h/6h/24h, or webhook for webhook-only streams."""
    filters: type[BaseModel] | None = None
    """Pydantic model of user filters; validated and defaults merged before ``sync`` sees them."""
    settings: type[BaseModel] | None = None
    """Pydantic model of stream settings; validated likewise."""

    @property
    def allowed_frequencies(self) -> tuple[Frequency, ...]:
        """The frequencies a user may pick."""
        if self.frequencies:
            return self.frequencies
        if self.sync is None:
            return ("webhook",)
        base: tuple[Frequency, ...] = ("manual", "1h", "6h", "24h")
        return (*base, "webhook") if self.webhook is not None else base

    @property
    def default_frequency(self) -> Frequency:
        """Frequency of a new stream row: webhook for webhook-only streams, else manual."""
        return "webhook" if self.sync is None else "manual"

    @property
    def parameterized(self) -> bool:
        """Whether the stream has instances."""
        return self.instances is not None


def build_stream_id(stream_key: str, instance_id: str | None) -> str:
    """Return ``key`` or ``key:instance``."""
    return stream_key if not instance_id else f"{stream_key}:{instance_id}"


def parse_stream_id(stream_id: str) -> tuple[str, str | None]:
    """Split a stream id at its first colon; instance ids may contain colons and slashes."""
    key, sep, inst = stream_id.partition(":")
    return key, (inst if sep else None)
