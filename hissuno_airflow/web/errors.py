"""One place that turns exceptions into JSON: ``HissunoError`` by its own code and status, anything else 500."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from ..kit.errors import HissunoError
from ..kit.redaction import redact_text

log = logging.getLogger("hissuno.web")


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON shape of every error answer."""
    return {"error": code, "message": message, "field": field}


def register(app: Flask) -> None:
    """Install the error handlers on ``app``."""

    @app.errorhandler(HissunoError)
    def _hissuno(exc: HissunoError) -> Any:
        body = error_body(exc.code, redact_text(str(exc)), getattr(exc, "field", None))
        if isinstance(getattr(exc, "connection", None), dict):  # AccountExists: the connection it names
            body["connection"] = exc.connection  # type: ignore[attr-defined]
        return jsonify(body), exc.http_status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error_body(code, exc.description or exc.name or "")), exc.code or 500

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Any:
        # The traceback goes to the server log only, and through redaction first.
        log.error("unhandled error: %s", redact_text("".join(traceback.format_exception(exc))))
        return jsonify(error_body("internal_error", "an internal error occurred")), 500
