"""authlib's OAuth 2.0 client for a plugin's token endpoint, with the body the plugin declares.

The code exchange (``connect/oauth2.py``) and the standard refresh grant (``refresh.py``) both get
their client here. A plugin whose ``OAuth2Auth.token_body`` is ``"json"`` (Atlassian) gets a client
authentication method registered with authlib (``register_client_auth_method``): authlib builds its
usual form body, and the method, which authlib's httpx auth flow applies to the outgoing request,
rewrites it as one JSON object (``Content-Type: application/json``) with the client credentials where
``token_endpoint_auth_method`` puts them. Every other plugin keeps authlib's form body unchanged.
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..kit.auth import OAuth2Auth

JSON_SUFFIX = "+json"
"""Appended to ``token_endpoint_auth_method`` to name the registered JSON-body variant."""


def oauth_client(auth: OAuth2Auth | None = None, **kwargs: Any) -> Any:
    """An ``authlib.integrations.httpx_client.OAuth2Client``.

    Args:
        auth: the plugin's OAuth 2.0 declaration; given, the client authenticates at the token endpoint
            by its ``token_endpoint_auth_method`` and sends its ``token_body``. None: a client for the
            authorize URL only.
        **kwargs: passed to ``OAuth2Client`` (``client_id``, ``client_secret``, ``timeout``...).
    """
    with warnings.catch_warnings():
        # authlib 1.9 flags its httpx integration as moving to httpx2; the API used here is unchanged.
        warnings.simplefilter("ignore")
        from authlib.integrations.httpx_client import OAuth2Client
    if auth is None:
        return OAuth2Client(**kwargs)
    method = auth.token_endpoint_auth_method
    if auth.token_body == "form":
        return OAuth2Client(token_endpoint_auth_method=method, **kwargs)
    name = method + JSON_SUFFIX
    client = OAuth2Client(token_endpoint_auth_method=name, **kwargs)
    client.register_client_auth_method((name, _json_body(method)))
    return client


def _json_body(method: str) -> Callable[[Any, str, str, Any, Any], tuple[str, Any, bytes]]:
    """An authlib client-auth function: the form body authlib built, as JSON, authenticated by ``method``."""

    def encode(client: Any, http_method: str, uri: str, headers: Any, body: Any) -> tuple[str, Any, bytes]:
        text = body.decode() if isinstance(body, (bytes, bytearray)) else str(body or "")
        fields: dict[str, str] = dict(parse_qsl(text, keep_blank_values=True))
        if method == "client_secret_basic":
            from authlib.oauth2.auth import encode_client_secret_basic

            uri, headers, _ = encode_client_secret_basic(client, http_method, uri, headers, body)
        else:
            fields["client_id"] = client.client_id
            fields["client_secret"] = client.client_secret or ""
        data = json.dumps(fields).encode()
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(data))
        return uri, headers, data

    return encode
