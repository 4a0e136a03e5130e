"""GitHub App authentication: the app JWT (RS256, joserfc) that mints installation access tokens."""

from __future__ import annotations

import time

JWT_LIFETIME_S = 540
"""GitHub accepts at most ten minutes; nine leave room for clock drift."""
CLOCK_DRIFT_S = 60
"""``iat`` is back-dated by this much, as GitHub's docs recommend."""


def app_jwt(app_id: str, private_key_pem: str, *, now: float | None = None) -> str:
    """A JWT that authenticates as the app itself (``GET /app/installations/{id}``, minting tokens).

    Raises:
        ValueError: the private key is not a PEM RSA key (the message never quotes it).
    """
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    try:
        if private_key_pem.startswith("base64:"):  # as the original accepted it: base64 of the PEM file
            import base64

            private_key_pem = base64.b64decode(private_key_pem.removeprefix("base64:")).decode()
        # Keys kept in a one-line environment variable often carry literal "\n" sequences.
        key = RSAKey.import_key(private_key_pem.replace("\\n", "\n"))
    except Exception:
        msg = "private key: expected the app's PEM-encoded RSA private key"
        raise ValueError(msg) from None
    issued = int(now if now is not None else time.time()) - CLOCK_DRIFT_S
    claims = {"iat": issued, "exp": issued + CLOCK_DRIFT_S + JWT_LIFETIME_S, "iss": str(app_id)}
    return jwt.encode({"alg": "RS256", "typ": "JWT"}, claims, key)
