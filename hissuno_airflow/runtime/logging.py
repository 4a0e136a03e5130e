"""The plugin-facing logger: prefixed, structured, and redacted before anything is written."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from ..kit.redaction import redact, redact_text


class PluginLogger:
    """``info/warning/error/debug(message, data)`` with ``[plugin:stream]`` prefix and secret masking."""

    def __init__(self, prefix: str, secrets: list[str] | None = None, logger: logging.Logger | None = None):
        self.prefix = prefix
        self.secrets = secrets if secrets is not None else []
        self._log = logger or logging.getLogger("hissuno.plugins")
        self._debug = bool(os.environ.get("HISSUNO_DEBUG_INTEGRATIONS"))

    def _emit(self, level: int, message: str, data: Mapping[str, Any] | None) -> None:
        text = redact_text(f"[{self.prefix}] {message}", self.secrets)
        if data:
            text += " " + str(redact(dict(data), secrets=self.secrets))
        self._log.log(level, text)

    def debug(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        """Debug line, only when HISSUNO_DEBUG_INTEGRATIONS is set."""
        if self._debug:
            self._emit(logging.INFO, message, data)

    def info(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        """Info line."""
        self._emit(logging.INFO, message, data)

    def warning(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        """Warning line."""
        self._emit(logging.WARNING, message, data)

    warn = warning

    def error(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        """Error line."""
        self._emit(logging.ERROR, message, data)
