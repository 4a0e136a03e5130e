"""Declarative webhook signature schemes, all enforced by one code path (``verify``).

A plugin declares *how* its provider signs (``webhook_signature=SlackSignature()``); the runtime calls
``verify(scheme, secret, request)`` before it touches the database. Every comparison is constant-time,
and a failure names what was wrong (missing header, stale timestamp, bad signature) without echoing
the secret or the expected value.

Schemes: ``HmacSignature`` (the general form) and its presets ``SlackSignature``, ``GitHubSignature``,
``StandardWebhooks`` (Fathom, Svix), ``HubSpotV3``, ``LinearSignature``, ``ZendeskSignature``,
``NotionSignature``, ``IntercomSignature``, ``JiraSignature``; plus ``HubSpotV1`` (plain SHA-256),
``SharedSecretHeader`` (PostHog-style static secret) and ``JwtSignature`` (Gong, RS256 JWT over the body).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from .errors import WebhookSignatureError

Algorithm = Literal["sha256", "sha1"]
Encoding = Literal["hex", "base64"]
TimestampFormat = Literal["seconds", "ms", "iso"]
SecretEncoding = Literal["raw", "whsec_base64"]


class SignatureFailure(WebhookSignatureError):
    """Verification failed; ``reason`` is one of missing_header, stale, bad_signature, no_secret."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class SignedRequest:
    """The parts of an HTTP request a scheme may sign."""

    body: bytes
    headers: Mapping[str, str]
    """Header names are matched case-insensitively."""
    method: str = "POST"
    url: str = ""
    """The public URL the provider posted to (HubSpot v3 signs it)."""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or None."""
        low = name.lower()
        for k, v in self.headers.items():
            if k.lower() == low:
                return v
        return None


@dataclass(frozen=True)
class Verified:
    """What a successful verification learned about the event."""

    event_id: str | None
    """Provider event/delivery id when the scheme carries one (``webhook-id``, ``X-GitHub-Delivery``)."""
    timestamp: float | None
    """Signed timestamp (epoch seconds) when the scheme has one."""


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook as ``resolve_connection`` sees it."""

    payload: Any
    raw_body: bytes
    headers: Mapping[str, str]
    event_id: str | None


@dataclass(frozen=True)
class _Scheme:
    secret_env: str | None = None
    """Environment variable holding the app-level secret (static webhook route)."""
    secret_setting: str | None = "webhook_secret"
    """Connection setting holding a per-connection secret (connection-scoped route); wins over the env."""
    event_id_header: str | None = None
    """Header carrying a delivery id used for dedupe."""
    event_id_field: str | None = None
    """Dotted JSON path of an event id in the payload (used when no header id is present)."""
    handshake_field: str | None = None
    """Field of an unsigned setup POST whose body is only ``{<field>: "<secret>"}`` (Notion's
    ``verification_token``): the provider hands over the secret it will sign every later delivery with.
    On the connection-scoped route the intake keeps it as the connection's secret while none is set."""

    def handshake_secret(self, body: bytes) -> str | None:
        """The secret a setup handshake hands over, or None when ``body`` is not exactly one."""
        if not self.handshake_field:
            return None
        try:
            payload = json.loads(body)
        except ValueError:
            return None
        if not isinstance(payload, Mapping) or set(payload) != {self.handshake_field}:
            return None
        value = payload[self.handshake_field]
        ok = isinstance(value, str) and 8 <= len(value) <= 512 and value.isprintable() and not value.isspace()
        return value if ok else None

    def check(self, secret: bytes, req: SignedRequest, now: float) -> Verified:  # pragma: no cover
        raise NotImplementedError

    def challenge(self, payload: Any) -> dict[str, Any] | None:
        """A response body for a provider setup handshake, or None."""
        return None

    def event_id(self, req: SignedRequest, payload: Any, verified: Verified) -> str | None:
        """The event's id: from the verified header, the payload path, else None."""
        if verified.event_id:
            return verified.event_id
        if self.event_id_header and (v := req.header(self.event_id_header)):
            return v
        if self.event_id_field and isinstance(payload, Mapping):
            cur: Any = payload
            for part in self.event_id_field.split("."):
                cur = cur.get(part) if isinstance(cur, Mapping) else None
            if isinstance(cur, (str, int)) and str(cur):
                return str(cur)
        return None


def _parse_ts(raw: str, fmt: TimestampFormat) -> float:
    if fmt == "iso":
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    value = float(raw)
    return value / 1000.0 if fmt == "ms" else value


def _encode(digest: bytes, encoding: Encoding) -> str:
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


def _render(template: str, values: Mapping[str, bytes]) -> bytes:
    # Substitution on bytes, not str.format: bodies are arbitrary bytes and may contain braces.
    out = bytearray()
    i = 0
    while i < len(template):
        if template[i] == "{":
            j = template.index("}", i)
            out += values[template[i + 1 : j]]
            i = j + 1
        else:
            out += template[i].encode()
            i += 1
    return bytes(out)


@dataclass(frozen=True)
class HmacSignature(_Scheme):
    """HMAC over a message built from a template; covers most providers.

    Template placeholders: ``{body}``, ``{timestamp}`` (the raw header/body value), ``{method}``,
    ``{url}``, ``{id}`` (the ``id_header`` value).
    """

    header: str = "X-Signature"
    """Header carrying the signature."""
    algorithm: Algorithm = "sha256"
    encoding: Encoding = "hex"
    prefix: str = ""
    """Text before the signature in the header (``sha256=``, ``v0=``, ``v1,``)."""
    message: str = "{body}"
    """What is signed."""
    timestamp_header: str | None = None
    """Header with the signed timestamp."""
    timestamp_field: str | None = None
    """Top-level JSON field with the timestamp (Linear's ``webhookTimestamp``)."""
    timestamp_format: TimestampFormat = "seconds"
    tolerance_seconds: int | None = None
    """Maximum |now - timestamp|; None disables the freshness check."""
    id_header: str | None = None
    """Header whose value is signed as ``{id}`` and used as the event id."""
    secret_encoding: SecretEncoding = "raw"
    """``whsec_base64``: the key is the base64 decoding of the text after ``whsec_``."""
    multiple: bool = False
    """The header may hold several space-separated signatures (key rotation)."""
    fallback: HmacSignature | None = None
    """Checked when ``header`` is absent (GitHub's legacy ``X-Hub-Signature``)."""

    def _key(self, secret: bytes) -> bytes:
        if self.secret_encoding == "whsec_base64":
            text = secret.decode()
            text = text.removeprefix("whsec_")
            try:
                return base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise SignatureFailure("no_secret", "webhook secret is not valid base64 after 'whsec_'") from exc
        return secret

    def _timestamp(self, req: SignedRequest) -> tuple[str | None, float | None]:
        raw: str | None = None
        if self.timestamp_header:
            raw = req.header(self.timestamp_header)
            if raw is None:
                raise SignatureFailure("missing_header", f"missing header {self.timestamp_header!r}")
        elif self.timestamp_field:
            try:
                value = json.loads(req.body).get(self.timestamp_field)
            except (ValueError, AttributeError):
                value = None
            if value is None:
                raise SignatureFailure("missing_header", f"missing body field {self.timestamp_field!r}")
            raw = str(value)
        if raw is None:
            return None, None
        try:
            return raw, _parse_ts(raw.strip(), self.timestamp_format)
        except (ValueError, OverflowError) as exc:
            raise SignatureFailure("stale", f"malformed timestamp in {self.timestamp_header or self.timestamp_field!r}") from exc

    def sign(self, secret: bytes | str, req: SignedRequest) -> str:
        """The header value a provider would send for ``req`` (for tests and fakes)."""
        key = self._key(secret.encode() if isinstance(secret, str) else secret)
        raw_ts, _ = self._timestamp(req)
        digest = hmac.new(key, self._message(req, raw_ts), self.algorithm).digest()
        return self.prefix + _encode(digest, self.encoding)

    def _message(self, req: SignedRequest, raw_ts: str | None) -> bytes:
        ident = req.header(self.id_header) if self.id_header else None
        return _render(self.message, {
            "body": req.body, "timestamp": (raw_ts or "").encode(), "method": req.method.upper().encode(),
            "url": req.url.encode(), "id": (ident or "").encode(),
        })

    def check(self, secret: bytes, req: SignedRequest, now: float) -> Verified:
        """Verify ``req``; raise SignatureFailure naming what is wrong."""
        sent = req.header(self.header)
        if sent is None:
            if self.fallback is not None:
                return self.fallback.check(secret, req, now)
            raise SignatureFailure("missing_header", f"missing header {self.header!r}")
        ident = req.header(self.id_header) if self.id_header else None
        if self.id_header and not ident:
            raise SignatureFailure("missing_header", f"missing header {self.id_header!r}")
        raw_ts, ts = self._timestamp(req)
        if ts is not None and self.tolerance_seconds is not None and abs(now - ts) > self.tolerance_seconds:
            raise SignatureFailure(
                "stale", f"timestamp outside the {self.tolerance_seconds}s window"
            )
        key = self._key(secret)
        expected = self.prefix + _encode(
            hmac.new(key, self._message(req, raw_ts), self.algorithm).digest(), self.encoding
        )
        candidates = sent.split() if self.multiple else [sent.strip()]
        ok = False
        for cand in candidates:
            # Evaluate every candidate so timing does not reveal which one matched.
            ok |= hmac.compare_digest(cand.encode(), expected.encode())
        if not ok:
            raise SignatureFailure("bad_signature", f"signature in {self.header!r} does not match")
        return Verified(event_id=ident, timestamp=ts)


def SlackSignature(**overrides: Any) -> HmacSignature:
    """Slack v0 signing: ``v0=hex(HMAC-SHA256(secret, "v0:{ts}:{body}"))``, 300 s window."""
    base: dict[str, Any] = {
        "header": "X-Slack-Signature", "prefix": "v0=", "message": "v0:{timestamp}:{body}",
        "timestamp_header": "X-Slack-Request-Timestamp", "tolerance_seconds": 300,
        "secret_env": "SLACK_SIGNING_SECRET", "event_id_field": "event_id",
    }
    return _SlackScheme(**{**base, **overrides})


@dataclass(frozen=True)
class _SlackScheme(HmacSignature):
    def challenge(self, payload: Any) -> dict[str, Any] | None:
        """Answer Slack's ``url_verification`` handshake."""
        if isinstance(payload, Mapping) and payload.get("type") == "url_verification":
            ch = payload.get("challenge")
            if isinstance(ch, str):
                return {"challenge": ch}
        return None


def GitHubSignature(**overrides: Any) -> HmacSignature:
    """GitHub: ``X-Hub-Signature-256: sha256=<hex>``, falling back to legacy ``X-Hub-Signature: sha1=``."""
    legacy = HmacSignature(header="X-Hub-Signature", algorithm="sha1", prefix="sha1=")
    base: dict[str, Any] = {
        "header": "X-Hub-Signature-256", "prefix": "sha256=", "fallback": legacy,
        "secret_env": "GITHUB_WEBHOOK_SECRET", "event_id_header": "X-GitHub-Delivery",
    }
    return HmacSignature(**{**base, **overrides})


def StandardWebhooks(**overrides: Any) -> HmacSignature:
    """Standard Webhooks (Fathom, Svix): ``v1,base64(HMAC-SHA256(key, "{id}.{ts}.{body}"))``, 300 s."""
    base: dict[str, Any] = {
        "header": "webhook-signature", "encoding": "base64", "prefix": "v1,",
        "message": "{id}.{timestamp}.{body}", "timestamp_header": "webhook-timestamp",
        "tolerance_seconds": 300, "id_header": "webhook-id", "secret_encoding": "whsec_base64",
        "multiple": True,
    }
    return HmacSignature(**{**base, **overrides})


def HubSpotV3(**overrides: Any) -> HmacSignature:
    """HubSpot v3: base64 HMAC-SHA256 of ``{METHOD}{url}{body}{timestamp_ms}``, 300 s window.

    HubSpot signs the URI with some percent-escapes decoded (``%3A`` -> ``:``, ``%2F`` -> ``/``, ...), and
    posts a JSON array of up to 100 events: the delivery's id is derived from every ``eventId`` in it.
    """
    base: dict[str, Any] = {
        "header": "X-HubSpot-Signature-v3", "encoding": "base64", "message": "{method}{url}{body}{timestamp}",
        "timestamp_header": "X-HubSpot-Request-Timestamp", "timestamp_format": "ms", "tolerance_seconds": 300,
        "secret_env": "HUBSPOT_CLIENT_SECRET",
    }
    return _HubSpotV3Scheme(**{**base, **overrides})


_HUBSPOT_DECODED = {"%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
                    "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";"}
_HUBSPOT_ESCAPE = re.compile("|".join(_HUBSPOT_DECODED), re.IGNORECASE)


@dataclass(frozen=True)
class _HubSpotV3Scheme(HmacSignature):
    def _message(self, req: SignedRequest, raw_ts: str | None) -> bytes:
        url = _HUBSPOT_ESCAPE.sub(lambda m: _HUBSPOT_DECODED[m.group(0).upper()], req.url)
        return super()._message(SignedRequest(req.body, req.headers, req.method, url), raw_ts)

    def event_id(self, req: SignedRequest, payload: Any, verified: Verified) -> str | None:
        """``hubspot:<sha256 of the sorted eventIds>``: a resent batch (same events, a higher
        ``attemptNumber``) is the same delivery, while two batches sharing one event are not."""
        if isinstance(payload, list):
            ids = sorted(str(e["eventId"]) for e in payload if isinstance(e, Mapping) and e.get("eventId") is not None)
            if ids and len(ids) == len(payload):
                return "hubspot:" + hashlib.sha256(",".join(ids).encode()).hexdigest()[:40]
        return super().event_id(req, payload, verified)


def LinearSignature(**overrides: Any) -> HmacSignature:
    """Linear: hex HMAC-SHA256 of the body; freshness from body ``webhookTimestamp`` (ms), 60 s."""
    base: dict[str, Any] = {
        "header": "Linear-Signature", "timestamp_field": "webhookTimestamp", "timestamp_format": "ms",
        "tolerance_seconds": 60, "secret_env": "LINEAR_WEBHOOK_SIGNING_SECRET",
        "event_id_header": "Linear-Delivery",
    }
    return HmacSignature(**{**base, **overrides})


def ZendeskSignature(**overrides: Any) -> HmacSignature:
    """Zendesk: base64 HMAC-SHA256 of ``{iso timestamp}{body}``."""
    base: dict[str, Any] = {
        "header": "X-Zendesk-Webhook-Signature", "encoding": "base64", "message": "{timestamp}{body}",
        "timestamp_header": "X-Zendesk-Webhook-Signature-Timestamp", "timestamp_format": "iso",
        "tolerance_seconds": 300, "event_id_header": "X-Zendesk-Webhook-Invocation-Id",
    }
    return HmacSignature(**{**base, **overrides})


def NotionSignature(**overrides: Any) -> HmacSignature:
    """Notion: ``X-Notion-Signature: sha256=<hex>`` keyed by the verification token, which Notion first
    posts unsigned as ``{"verification_token": ...}`` (``handshake_field``)."""
    base: dict[str, Any] = {"header": "X-Notion-Signature", "prefix": "sha256=", "event_id_field": "id",
                            "handshake_field": "verification_token"}
    return HmacSignature(**{**base, **overrides})


def IntercomSignature(**overrides: Any) -> HmacSignature:
    """Intercom: ``X-Hub-Signature: sha1=<hex>`` keyed by the app's client secret."""
    base: dict[str, Any] = {
        "header": "X-Hub-Signature", "algorithm": "sha1", "prefix": "sha1=",
        "secret_env": "INTERCOM_CLIENT_SECRET", "event_id_field": "id",
    }
    return HmacSignature(**{**base, **overrides})


def JiraSignature(**overrides: Any) -> HmacSignature:
    """Jira admin webhooks: ``X-Hub-Signature: sha256=<hex>``."""
    base: dict[str, Any] = {"header": "X-Hub-Signature", "prefix": "sha256=", "event_id_header": "X-Atlassian-Webhook-Identifier"}
    return HmacSignature(**{**base, **overrides})


@dataclass(frozen=True)
class HubSpotV1(_Scheme):
    """HubSpot v1/v2: plain SHA-256 hex of ``{secret}{body}`` (v1) or ``{secret}{METHOD}{url}{body}`` (v2)."""

    header: str = "X-HubSpot-Signature"
    version_header: str = "X-HubSpot-Signature-Version"
    secret_env: str | None = "HUBSPOT_CLIENT_SECRET"

    def sign(self, secret: bytes | str, req: SignedRequest, version: str = "v1") -> str:
        """The signature HubSpot sends."""
        key = secret.encode() if isinstance(secret, str) else secret
        src = key + req.body if version == "v1" else key + req.method.upper().encode() + req.url.encode() + req.body
        return hashlib.sha256(src).hexdigest()

    def check(self, secret: bytes, req: SignedRequest, now: float) -> Verified:
        """Verify a v1 or v2 signature (no timestamp exists in these versions)."""
        sent = req.header(self.header)
        if sent is None:
            raise SignatureFailure("missing_header", f"missing header {self.header!r}")
        version = (req.header(self.version_header) or "v1").lower()
        if version not in ("v1", "v2"):
            raise SignatureFailure("bad_signature", f"unsupported {self.version_header!r}")
        if not hmac.compare_digest(sent.strip().lower().encode(), self.sign(secret, req, version).encode()):
            raise SignatureFailure("bad_signature", f"signature in {self.header!r} does not match")
        return Verified(event_id=None, timestamp=None)


@dataclass(frozen=True)
class SharedSecretHeader(_Scheme):
    """A static shared secret sent verbatim in a header (PostHog destinations); no HMAC, no window."""

    header: str = "X-Webhook-Secret"

    def check(self, secret: bytes, req: SignedRequest, now: float) -> Verified:
        """Constant-time compare of the header with the secret."""
        sent = req.header(self.header)
        if sent is None:
            raise SignatureFailure("missing_header", f"missing header {self.header!r}")
        if not hmac.compare_digest(sent.encode(), secret):
            raise SignatureFailure("bad_signature", f"secret in {self.header!r} does not match")
        return Verified(event_id=None, timestamp=None)


@dataclass(frozen=True)
class JwtSignature(_Scheme):
    """An RS256 JWT in ``Authorization`` whose ``body_sha256`` claim hashes the raw body (Gong).

    The secret is the public key: PEM, or the bare base64 body of one (as a user may copy it from the
    provider's UI without the ``-----BEGIN PUBLIC KEY-----`` lines). When ``check_url`` is set,
    ``webhook_url`` must name the request URL, compared as Gong does: scheme, lower-cased host and path
    without a trailing slash (no query).

    Freshness: Gong's ``exp``/``iat`` claims are unconfirmed (providers.md 9.4), so neither is required.
    ``exp`` is enforced when present (``leeway_seconds``); without it, an ``iat`` older than
    ``max_age_seconds`` (or in the future) is stale. A token carrying neither can only be replayed
    with its own body (``body_sha256``) to its own URL (``webhook_url``), which the intake's event-id
    dedup stores once.
    """

    header: str = "Authorization"
    secret_env: str | None = "GONG_WEBHOOK_PUBLIC_KEY"
    check_url: bool = False
    leeway_seconds: int = 60
    max_age_seconds: int = 300
    algorithms: tuple[str, ...] = field(default=("RS256",))

    def check(self, secret: bytes, req: SignedRequest, now: float) -> Verified:
        """Verify the JWT signature, expiry and body hash."""
        # joserfc ships with authlib (authlib.jose is deprecated in its favour).
        from joserfc import jwt
        from joserfc.errors import ExpiredTokenError, JoseError
        from joserfc.jwk import RSAKey

        sent = req.header(self.header)
        if not sent:
            raise SignatureFailure("missing_header", f"missing header {self.header!r}")
        token = sent.split(" ", 1)[1] if sent.lower().startswith("bearer ") else sent
        try:
            decoded = jwt.decode(token.strip(), RSAKey.import_key(_pem_public_key(secret)),
                                 algorithms=list(self.algorithms))
            claims = decoded.claims
            jwt.JWTClaimsRegistry(now=int(now), leeway=self.leeway_seconds).validate(claims)
        except ExpiredTokenError:
            raise SignatureFailure("stale", f"JWT in {self.header!r} has expired") from None
        except (JoseError, ValueError, TypeError):
            raise SignatureFailure("bad_signature", f"JWT in {self.header!r} is not valid") from None
        issued = claims.get("iat")
        if "exp" not in claims and isinstance(issued, int | float) and not (
                -self.leeway_seconds <= now - issued <= self.max_age_seconds + self.leeway_seconds):
            raise SignatureFailure("stale", f"JWT in {self.header!r} was issued outside the accepted window")
        body_hash = hashlib.sha256(req.body).hexdigest()
        if not hmac.compare_digest(str(claims.get("body_sha256", "")).encode(), body_hash.encode()):
            raise SignatureFailure("bad_signature", "JWT body_sha256 does not match the body")
        claimed = claims.get("webhook_url")
        if self.check_url and (not isinstance(claimed, str) or _url_key(claimed) != _url_key(req.url)):
            raise SignatureFailure("bad_signature", "JWT webhook_url does not match this endpoint")
        return Verified(event_id=None, timestamp=float(claims["iat"]) if "iat" in claims else None)


def _url_key(url: str) -> str:
    """``scheme://host[:port]/path`` with scheme and host lower-cased, no trailing slash, no query."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def _pem_public_key(secret: bytes) -> bytes:
    """``secret`` as PEM: a bare base64 key body is wrapped in ``PUBLIC KEY`` armour."""
    text = secret.strip()
    if text.startswith(b"-----BEGIN"):
        return text
    body = b"".join(text.split())
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"\n".join([b"-----BEGIN PUBLIC KEY-----", *lines, b"-----END PUBLIC KEY-----"]) + b"\n"


SignatureScheme = HmacSignature | HubSpotV1 | SharedSecretHeader | JwtSignature


def verify(
    scheme: _Scheme, secret: bytes | str | None, req: SignedRequest, *, now: float | None = None
) -> Verified:
    """The single verification path every webhook goes through.

    Raises:
        SignatureFailure: (401) missing secret, missing header, stale timestamp or bad signature.
    """
    if not secret:
        raise SignatureFailure("no_secret", "no webhook secret is configured for this endpoint")
    key = secret.encode() if isinstance(secret, str) else secret
    return scheme.check(key, req, time.time() if now is None else now)


def resolve_secret(
    scheme: _Scheme, *, settings: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The secret in force: the connection's setting when present, else the scheme's environment variable."""
    if settings and scheme.secret_setting:
        val = settings.get(scheme.secret_setting)
        if isinstance(val, str) and val:
            return val
    if scheme.secret_env:
        env = os.environ if environ is None else environ
        return env.get(scheme.secret_env) or None
    return None


__all__ = [
    "GitHubSignature",
    "HmacSignature",
    "HubSpotV1",
    "HubSpotV3",
    "IntercomSignature",
    "JiraSignature",
    "JwtSignature",
    "LinearSignature",
    "NotionSignature",
    "SharedSecretHeader",
    "SignatureFailure",
    "SignatureScheme",
    "SignedRequest",
    "SlackSignature",
    "StandardWebhooks",
    "Verified",
    "WebhookEvent",
    "ZendeskSignature",
    "resolve_secret",
    "verify",
]
