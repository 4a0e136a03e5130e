"""The code exchange's token response as ``OAuthTokens``: expiry and the scope in either shape."""

from __future__ import annotations

from hissuno_airflow.runtime.connect.oauth2 import _tokens


def test_a_scope_array_is_joined_and_a_string_kept() -> None:
    # Linear answered ``scope`` as a JSON array for older apps and as a string for newer ones.
    assert _tokens({"access_token": "a", "scope": ["read", "write"]}).scope == "read write"
    assert _tokens({"access_token": "a", "scope": "read,write"}).scope == "read,write"
    assert _tokens({"access_token": "a"}).scope is None
    assert _tokens({"access_token": "a", "expires_in": 86399}).expires_at is not None
