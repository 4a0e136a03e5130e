"""A fake GitHub App backend (providers.md 2.1): app JWTs checked against the app's public key,
installation tokens minted for an hour, and an installation-scoped API that accepts only live tokens.

The GitHub plugin's own fake can extend this one with issues, pulls and webhooks.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .server import FakeProvider, FakeRequest, FakeResponse, Reply, get, post

APP_ID = "424242"


def new_private_key() -> tuple[str, bytes]:
    """(PEM private key text for the app, PEM public key bytes for the fake)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


class FakeGitHubApp(FakeProvider):
    """Installations by id; ``mints`` counts installation tokens; ``jwt_errors`` records refusals."""

    def __init__(self, public_key: bytes) -> None:
        super().__init__()
        self.public_key = public_key
        self.installations: dict[str, dict[str, Any]] = {}
        self.mints = 0
        self.jwt_errors: list[str] = []
        self.repos = [{"id": 1, "full_name": "acme/api", "private": True},
                      {"id": 2, "full_name": "acme/web", "private": False}]

    def add_installation(self, installation_id: int, login: str) -> None:
        self.installations[str(installation_id)] = {"id": installation_id,
                                                    "account": {"login": login, "id": 9000 + installation_id}}

    def _revoke_installation_tokens(self, installation_id: int) -> None:
        for token in [t for t in self.tokens if t.startswith(f"ghs_{installation_id}_")]:
            self.revoke_token(token)

    def delete_installation(self, installation_id: int) -> None:
        """Uninstall the app: the installation and its tokens are gone (minting answers 404)."""
        self.installations.pop(str(installation_id))
        self._revoke_installation_tokens(installation_id)

    def suspend_installation(self, installation_id: int, suspended: bool = True) -> None:
        """Suspend (or unsuspend) it: its tokens stop working and minting answers 403 while suspended."""
        self.installations[str(installation_id)]["suspended_at"] = "2025-03-01T09:00:00Z" if suspended else None
        if suspended:
            self._revoke_installation_tokens(installation_id)

    def _app_auth(self, req: FakeRequest) -> FakeResponse | None:
        """401 unless the bearer is an RS256 JWT of this app, signed by its key, within GitHub's limits."""
        from joserfc import jwt
        from joserfc.jwk import RSAKey

        try:
            token = jwt.decode(req.bearer_token or "", RSAKey.import_key(self.public_key), algorithms=["RS256"])
            claims = token.claims
            now = time.time()
            if str(claims.get("iss")) != APP_ID:
                raise ValueError("wrong iss")
            if not claims["iat"] <= now <= claims["exp"] or claims["exp"] - claims["iat"] > 660:
                raise ValueError("iat/exp outside GitHub's ten minutes")
        except Exception as exc:
            self.jwt_errors.append(f"{type(exc).__name__}: {exc}")
            return FakeResponse(401, {"message": "A JSON web token could not be decoded"})
        return None

    @get("/app/installations/{installation_id}")
    def installation(self, req: FakeRequest, installation_id: str) -> Reply:
        refused = self._app_auth(req)
        if refused:
            return refused
        found = self.installations.get(installation_id)
        return found if found else (404, {"message": "Not Found"})

    @post("/app/installations/{installation_id}/access_tokens")
    def access_token(self, req: FakeRequest, installation_id: str) -> Reply:
        refused = self._app_auth(req)
        if refused:
            return refused
        if installation_id not in self.installations:
            return 404, {"message": "Not Found"}
        if self.installations[installation_id].get("suspended_at"):
            return 403, {"message": "This installation has been suspended",
                         "documentation_url": "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app"}
        self.mints += 1
        token = self.issue_token(f"ghs_{installation_id}_{self.mints}", expires_in=3600)
        expires = datetime.fromtimestamp(time.time() + 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 201, {"token": token, "expires_at": expires, "permissions": {"metadata": "read"}}

    @get("/installation/repositories")
    def repositories(self, req: FakeRequest) -> Reply:
        refused = self.check_bearer(req)
        if refused:
            return refused
        return {"total_count": len(self.repos), "repositories": self.repos}
