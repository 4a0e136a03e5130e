"""Settings of the ``events`` stream: channel modes and capture scope, as the reference's ``slack_channels``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Mode = Literal["interactive", "passive"]
Scope = Literal["external_only", "all"]


class ChannelConfig(BaseModel):
    """How the bot behaves in one channel."""

    id: str = ""
    """The channel's id (``C...``)."""
    mode: Mode = "interactive"
    """``interactive``: the bot answers in threads it takes part in; ``passive``: capture only, never answer."""
    capture_scope: Scope = "external_only"
    """Which threads a passive channel (or an untracked thread) captures: ``external_only`` (an author's email
    domain is not the workspace's) or ``all``."""


class EventSettings(BaseModel):
    """Channel modes (per channel id, with defaults) and the workspace's own email domains."""

    channels: list[ChannelConfig] = Field(default_factory=list)
    """Channels with their own mode and capture scope (``[{"id": "C...", "mode": "passive"}]``)."""
    default_mode: Mode = "interactive"
    """Mode of a channel not listed in ``channels``."""
    default_capture_scope: Scope = "external_only"
    """Capture scope of a channel not listed in ``channels``."""
    internal_domains: list[str] = Field(default_factory=list)
    """Email domains of the workspace's own people, besides the installer's domain found at connect."""

    def channel(self, channel_id: str) -> ChannelConfig:
        """The configuration in force for ``channel_id``."""
        for ch in self.channels:
            if ch.id == channel_id:
                return ch
        return ChannelConfig(id=channel_id, mode=self.default_mode, capture_scope=self.default_capture_scope)
