"""Signers for every webhook scheme in ``hissuno_airflow.kit.signatures``: what a provider sends.

``sign(scheme, secret, payload, url=..., ts=..., event_id=...)`` returns a ``WebhookDelivery`` (body,
headers, URL) that ``kit.signatures.verify`` accepts with the receiving side's secret. The signer for a
scheme is looked up by its type in ``SIGNERS`` (subclasses inherit their base's signer), one function
per scheme type:

- ``sign_hmac``: every ``HmacSignature`` preset (Slack, GitHub, Standard Webhooks, HubSpot v3, Linear,
  Zendesk, Notion, Intercom, Jira) from the scheme's own fields: the timestamp goes in its header in its
  format (seconds, ms, ISO) or into the JSON body field (Linear's ``webhookTimestamp``); the event id in
  the ``id_header`` and ``event_id_header``. ``legacy=True`` signs with the ``fallback`` (GitHub's sha1).
- ``sign_hubspot_v1``: v1 or v2 (``version=``), which sign no timestamp.
- ``sign_shared_secret``: the secret itself in the header.
- ``sign_jwt``: an RS256 JWT over the body hash, signed with the private key; the receiver holds the
  public key (``WebhookKeys.verify``), so ``keys_for`` makes both.

A payload that is not bytes is JSON-encoded (after the body timestamp is added); bytes are signed as
they are. ``query`` is appended to the URL before signing, for schemes that sign the URL (HubSpot v3).
``Signer`` binds a scheme and keys into the ``kit.testing.WebhookSigner`` callable the conformance
check takes; ``Signer.forged()`` is the same signer with another well-formed secret.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import urlencode

from hissuno_airflow.kit import signatures as sig
from hissuno_airflow.kit.testing import WebhookDelivery

from .github_app import new_private_key

__all__ = [
    "SIGNERS",
    "Signer",
    "WebhookDelivery",
    "WebhookKeys",
    "forged_keys",
    "keys_for",
    "rsa_keys",
    "sign",
    "sign_hmac",
    "sign_hubspot_v1",
    "sign_jwt",
    "sign_shared_secret",
    "signer_for",
]

DEFAULT_SECRET = "conn-webhook-secret-0123"
FORGED_SECRET = "another-secret-999"
WHSEC = "whsec_ZmF0aG9tLXRlc3Qta2V5LTAxMjM0NTY3ODlhYmNkZWY="
FORGED_WHSEC = "whsec_b3RoZXItc2VjcmV0LWtleS0wMTIzNDU2Nzg5"


@cache
def rsa_keys(name: str = "default") -> tuple[str, str]:
    """(private PEM, public PEM) of a key pair generated once per ``name`` per process."""
    private, public = new_private_key()
    return private, public.decode()


@dataclass(frozen=True)
class WebhookKeys:
    """A scheme's secrets: ``sign`` is what the provider signs with, ``verify`` what hissuno is configured with."""

    sign: str
    verify: str


def keys_for(scheme: Any, secret: str | None = None) -> WebhookKeys:
    """Well-formed keys for ``scheme`` (``secret`` when given, for HMAC and shared-secret schemes)."""
    if isinstance(scheme, sig.JwtSignature):
        private, public = rsa_keys()
        return WebhookKeys(private, public)
    if secret is None:
        uses_whsec = isinstance(scheme, sig.HmacSignature) and scheme.secret_encoding == "whsec_base64"
        secret = WHSEC if uses_whsec else DEFAULT_SECRET
    return WebhookKeys(secret, secret)


def forged_keys(scheme: Any) -> WebhookKeys:
    """Keys an attacker might hold: well-formed for ``scheme`` but not the configured ones."""
    if isinstance(scheme, sig.JwtSignature):
        private, public = rsa_keys("forged")
        return WebhookKeys(private, public)
    uses_whsec = isinstance(scheme, sig.HmacSignature) and scheme.secret_encoding == "whsec_base64"
    secret = FORGED_WHSEC if uses_whsec else FORGED_SECRET
    return WebhookKeys(secret, secret)


def _with_query(url: str, query: Mapping[str, str] | None) -> str:
    if not query:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(dict(query))


def _body(payload: Any, extra: Mapping[str, Any] | None = None) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if extra and isinstance(payload, Mapping):
        payload = {**payload, **extra}
    return json.dumps(payload).encode()


def _timestamp(fmt: str, ts: float) -> str | int:
    if fmt == "ms":
        return int(ts * 1000)
    if fmt == "iso":
        return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return int(ts)


def sign_hmac(scheme: sig.HmacSignature, secret: str, payload: Any, *, url: str = "", ts: float, event_id: str,
              method: str = "POST", legacy: bool = False, **_: Any) -> WebhookDelivery:
    """Any ``HmacSignature``; ``legacy`` signs with its ``fallback`` scheme (GitHub's ``X-Hub-Signature``)."""
    target = scheme.fallback if legacy and scheme.fallback is not None else scheme
    headers: dict[str, str] = {"Content-Type": "application/json"}
    extra: dict[str, Any] = {}
    if target.timestamp_header:
        headers[target.timestamp_header] = str(_timestamp(target.timestamp_format, ts))
    elif target.timestamp_field:
        extra[target.timestamp_field] = _timestamp(target.timestamp_format, ts)
    body = _body(payload, extra)
    for name in (target.id_header, scheme.event_id_header):
        if name:
            headers[name] = event_id
    headers[target.header] = target.sign(secret, sig.SignedRequest(body, headers, method, url))
    return WebhookDelivery(body, headers, url, method)


def sign_hubspot_v1(scheme: sig.HubSpotV1, secret: str, payload: Any, *, url: str = "", method: str = "POST",
                    version: str = "v1", **_: Any) -> WebhookDelivery:
    """HubSpot v1 (``{secret}{body}``) or v2 (``{secret}{METHOD}{url}{body}``): no timestamp, no event id."""
    body = _body(payload)
    headers = {"Content-Type": "application/json", scheme.version_header: version}
    headers[scheme.header] = scheme.sign(secret, sig.SignedRequest(body, headers, method, url), version)
    return WebhookDelivery(body, headers, url, method)


def sign_shared_secret(scheme: sig.SharedSecretHeader, secret: str, payload: Any, *, url: str = "",
                       method: str = "POST", **_: Any) -> WebhookDelivery:
    """The secret sent verbatim in the scheme's header."""
    return WebhookDelivery(_body(payload), {"Content-Type": "application/json", scheme.header: secret}, url, method)


def sign_jwt(scheme: sig.JwtSignature, secret: str, payload: Any, *, url: str = "", ts: float, method: str = "POST",
             lifetime: int | None = 120, issued: bool = True, bearer: bool = True, **_: Any) -> WebhookDelivery:
    """Gong: an RS256 JWT (``secret`` is the private PEM) with ``body_sha256``, ``webhook_url``, ``iat``
    (unless ``issued`` is False) and ``exp`` (unless ``lifetime`` is None)."""
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    body = _body(payload)
    claims: dict[str, Any] = {"body_sha256": hashlib.sha256(body).hexdigest(), "webhook_url": url}
    if issued:
        claims["iat"] = int(ts)
    if lifetime is not None:
        claims["exp"] = int(ts) + lifetime
    token = jwt.encode({"alg": "RS256"}, claims, RSAKey.import_key(secret))
    headers = {"Content-Type": "application/json", scheme.header: ("Bearer " if bearer else "") + token}
    return WebhookDelivery(body, headers, url, method)


SignFn = Callable[..., WebhookDelivery]
SIGNERS: dict[type, SignFn] = {
    sig.HmacSignature: sign_hmac,
    sig.HubSpotV1: sign_hubspot_v1,
    sig.SharedSecretHeader: sign_shared_secret,
    sig.JwtSignature: sign_jwt,
}
"""Scheme type -> signer; a subclass (``_SlackScheme``) uses its nearest base's entry."""


def signer_for(scheme: Any) -> SignFn:
    """The signer of ``scheme``'s type."""
    for klass in type(scheme).__mro__:
        if klass in SIGNERS:
            return SIGNERS[klass]
    raise LookupError(f"no webhook signer for {type(scheme).__name__}; add one to tests/fakes/webhooks.py")


def sign(scheme: Any, secret: str, payload: Any, *, url: str = "", ts: float | None = None, event_id: str = "evt-1",
         method: str = "POST", query: Mapping[str, str] | None = None, **options: Any) -> WebhookDelivery:
    """A delivery for ``payload`` as a provider using ``scheme`` sends it, signed with ``secret`` at ``ts``."""
    return signer_for(scheme)(scheme, secret, payload, url=_with_query(url, query), method=method,
                              ts=time.time() if ts is None else ts, event_id=event_id, **options)


class Signer:
    """A scheme bound to its keys: the ``WebhookSigner`` callable of ``kit.testing``, plus conveniences."""

    def __init__(self, scheme: Any, keys: WebhookKeys | None = None, **options: Any) -> None:
        self.scheme = scheme
        self.keys = keys or keys_for(scheme)
        self.options = options
        signer_for(scheme)  # fail at construction for a scheme without a signer

    @property
    def secret(self) -> str:
        """What the receiving side is configured with (connection ``webhook_secret`` or app env)."""
        return self.keys.verify

    def __call__(self, payload: Any, *, url: str = "", timestamp: float | None = None, event_id: str = "evt-1",
                 **options: Any) -> WebhookDelivery:
        return sign(self.scheme, self.keys.sign, payload, url=url, ts=timestamp, event_id=event_id,
                    **{**self.options, **options})

    def forged(self) -> Signer:
        """The same signer holding another, well-formed secret."""
        return Signer(self.scheme, forged_keys(self.scheme), **self.options)

    def with_secret(self, secret: str) -> Signer:
        """The same signer with ``secret`` (HMAC and shared-secret schemes; for JWT, a private PEM)."""
        verify = _public_pem(secret) if isinstance(self.scheme, sig.JwtSignature) else secret
        return Signer(self.scheme, WebhookKeys(secret, verify), **self.options)


def _public_pem(private_pem: str) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()
