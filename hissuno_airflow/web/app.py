"""The Flask app wrapping the blueprint, for both hosts (Airflow API server and ``hissuno serve``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app

from ..kit.errors import NotConfigured
from ..store.db import Store, get_store
from . import access, errors
from .blueprint import bp
from .search_api import search_bp

log = logging.getLogger("hissuno.web")


def create_app(
    *, authenticate: access.Authenticator, store: Store | Callable[[], Store] | None = None,
    dispatcher: Any = None, url_prefix: str = "", airflow_base: str = "",
) -> Flask:
    """Build the app.

    Args:
        authenticate: Maps a request to a user name (None: anonymous).
        store: A store, or a factory; default the configured store, opened lazily.
        dispatcher: Webhook dispatcher (default: ``runtime.webhooks.default_dispatcher()``).
        url_prefix: Where the blueprint sits inside this app (``/hissuno`` under serve).
        airflow_base: URL prefix of the Airflow UI for DAG links.
    """
    app = Flask("hissuno_airflow.web")
    app.config.update(
        HISSUNO_AUTHENTICATE=authenticate, HISSUNO_DISPATCHER=dispatcher,
        HISSUNO_AIRFLOW_BASE=airflow_base, MAX_CONTENT_LENGTH=16 * 1024 * 1024, JSON_SORT_KEYS=False,
    )
    if store is None:
        app.config["HISSUNO_STORE"] = get_store
    elif isinstance(store, Store):
        app.config["HISSUNO_STORE"] = lambda: store
    else:
        app.config["HISSUNO_STORE"] = store
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # A path with an empty segment ("//") is not a route: answer the JSON 404, not Werkzeug's 308 redirect.
    app.url_map.merge_slashes = False
    app.before_request(_one_secret_key)
    app.register_blueprint(bp, url_prefix=url_prefix or None)
    app.register_blueprint(search_bp, url_prefix=url_prefix or None)
    errors.register(app)
    _key_verdict(app)  # now when the store answers, so no request is the one that records the key
    return app


def _key_verdict(app: Flask) -> bool | NotConfigured | None:
    """Whether this process's secret key is the store's (``store.sealed.check_secret_key``); None while
    the store cannot say (unreachable: the routes report that, and the next request asks again)."""
    verdict: bool | NotConfigured | None = app.config.get("HISSUNO_KEY_VERDICT")
    if verdict is None:
        from ..store.sealed import check_secret_key

        try:
            check_secret_key(app.config["HISSUNO_STORE"]())
            verdict = True
        except NotConfigured as exc:
            verdict = exc
        except Exception:  # the store is away: no verdict yet
            return None
        app.config["HISSUNO_KEY_VERDICT"] = verdict
    return verdict


def _one_secret_key() -> None:
    """Refuse every request of a process whose secret key is not the store's (``store.sealed``).

    ``hissuno serve`` checks at start; under Airflow the routes live in the API server, which must start
    whatever the store says, so the app checks when it is built (on the API server's first Hissuno request)
    and, while the store was away, on each request until it answers: a replica with a key of its own
    answers 503 naming ``HISSUNO_SECRET_KEY`` rather than failing each OAuth callback and credential read."""
    verdict = _key_verdict(current_app)
    if isinstance(verdict, NotConfigured):
        raise verdict
