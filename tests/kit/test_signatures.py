"""Every Appendix B vector of providers.md, plus the failure modes of the shared ``verify`` path."""

from __future__ import annotations

import hashlib
import time

import pytest

from hissuno_airflow.kit import signatures as sig
from hissuno_airflow.kit.signatures import SignatureFailure, SignedRequest, verify

B = b'{"hello":"world"}'


def req(body: bytes = B, **headers: str) -> SignedRequest:
    return SignedRequest(body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})


def test_slack_vector() -> None:
    r = SignedRequest(B, {"X-Slack-Request-Timestamp": "1700000000",
                          "X-Slack-Signature": "v0=847e8f68e020fe69d5b60cb3ded54074024149b54d59e37785b63c35e60c4450"})
    scheme = sig.SlackSignature()
    assert verify(scheme, "8f742231b10e8888abcd99yyyzzz85a5", r, now=1700000100).timestamp == 1700000000
    with pytest.raises(SignatureFailure) as ei:
        verify(scheme, "8f742231b10e8888abcd99yyyzzz85a5", r, now=1700000301)
    assert ei.value.reason == "stale"
    with pytest.raises(SignatureFailure) as ei:
        verify(scheme, "other-secret", r, now=1700000000)
    assert ei.value.reason == "bad_signature"


def test_slack_challenge() -> None:
    assert sig.SlackSignature().challenge({"type": "url_verification", "challenge": "abc"}) == {"challenge": "abc"}
    assert sig.SlackSignature().challenge({"type": "event_callback"}) is None


@pytest.mark.parametrize(
    ("secret", "body", "headers"),
    [
        ("It's a Secret to Everybody", b"Hello, World!",
         {"X-Hub-Signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"}),
        ("whsec-test", B,
         {"X-Hub-Signature-256": "sha256=dd6de9189ccd27daad93261fbf5a287c12f87b58dee8c636c5887e87bb85af2f"}),
        ("whsec-test", B, {"X-Hub-Signature": "sha1=aa10fb03480bdfbd76fa8360ab449e7f62d75c34"}),
    ],
)
def test_github_vectors(secret: str, body: bytes, headers: dict[str, str]) -> None:
    verify(sig.GitHubSignature(), secret, SignedRequest(body, headers), now=0)


def test_github_sha256_wins_over_legacy() -> None:
    r = SignedRequest(B, {"X-Hub-Signature-256": "sha256=" + "0" * 64,
                          "X-Hub-Signature": "sha1=aa10fb03480bdfbd76fa8360ab449e7f62d75c34"})
    with pytest.raises(SignatureFailure):
        verify(sig.GitHubSignature(), "whsec-test", r, now=0)


def test_linear_vector_and_window() -> None:
    body = b'{"action":"create","type":"Issue","data":{"id":"abc"},"webhookTimestamp":1700000000000}'
    r = SignedRequest(body, {"Linear-Signature": "6c8c14fbc341f9e51be07fff881693ec4ca736a7a116f166a3ff38df5486e4e0"})
    assert verify(sig.LinearSignature(), "lin_wh_test", r, now=1700000059).timestamp == 1700000000
    with pytest.raises(SignatureFailure) as ei:
        verify(sig.LinearSignature(), "lin_wh_test", r, now=1700000061)
    assert ei.value.reason == "stale"


def test_intercom_vector() -> None:
    verify(sig.IntercomSignature(), "intercom-secret",
           SignedRequest(B, {"X-Hub-Signature": "sha1=f0370dccbe42fb3b813b5f0230d21cdb3a953eb7"}), now=0)


def test_zendesk_vector() -> None:
    r = SignedRequest(B, {"X-Zendesk-Webhook-Signature-Timestamp": "2024-04-17T17:18:10Z",
                          "X-Zendesk-Webhook-Signature": "Y81SumePkq2H7lpBAVl2l6gHH0/8wIft88kDmEP6pwI="})
    verify(sig.ZendeskSignature(), "zd-secret", r, now=1713374290 + 10)
    with pytest.raises(SignatureFailure):
        verify(sig.ZendeskSignature(), "zd-secret", r, now=1713374290 + 3600)


def test_notion_vector() -> None:
    verify(sig.NotionSignature(), "secret_notion_test", SignedRequest(B, {
        "X-Notion-Signature": "sha256=ab55521b2d427c5cf701a211d7a1f3e27148fe75046b7f4853b3279275d7aac1"}), now=0)


def test_hubspot_v3_vector() -> None:
    r = SignedRequest(B, {"X-HubSpot-Request-Timestamp": "1700000000000",
                          "X-HubSpot-Signature-v3": "vUf+F6FHKrfZyiKZ1OFjUYCvYSepNQmj3lL5ZVpuV4U="},
                      method="POST", url="https://example.com/hubspot/webhook")
    verify(sig.HubSpotV3(), "hs-secret", r, now=1700000000 + 299)
    with pytest.raises(SignatureFailure) as ei:
        verify(sig.HubSpotV3(), "hs-secret", r, now=1700000000 + 301)
    assert ei.value.reason == "stale"
    with pytest.raises(SignatureFailure):
        verify(sig.HubSpotV3(), "hs-secret", SignedRequest(B, r.headers, url="https://evil.example/x"), now=1700000000)


def test_hubspot_v3_decodes_escapes_in_the_uri_and_ids_a_batch_by_its_events() -> None:
    scheme = sig.HubSpotV3()
    headers = {"X-HubSpot-Request-Timestamp": "1700000000000"}
    # HubSpot signs the URI with %3A, %2F, ... decoded; the receiver sees them encoded.
    decoded = scheme.sign("hs-secret", SignedRequest(B, headers, "POST", "https://example.com/h?next=a:b/c"))
    encoded = SignedRequest(B, {**headers, "X-HubSpot-Signature-v3": decoded}, "POST",
                            "https://example.com/h?next=a%3Ab%2Fc")
    verify(scheme, "hs-secret", encoded, now=1700000000)
    one = scheme.event_id(encoded, [{"eventId": 2, "attemptNumber": 0}, {"eventId": 1}], sig.Verified(None, None))
    resent = scheme.event_id(encoded, [{"eventId": 1}, {"eventId": 2, "attemptNumber": 1}], sig.Verified(None, None))
    other = scheme.event_id(encoded, [{"eventId": 1}, {"eventId": 3}], sig.Verified(None, None))
    assert one == resent and one is not None and one.startswith("hubspot:") and other != one


def test_hubspot_v1_vector() -> None:
    r = SignedRequest(B, {"X-HubSpot-Signature": "3ad2c094a17e7029caf9518168b9c1f0d4154afe7201b5ca0354e762346ff360",
                          "X-HubSpot-Signature-Version": "v1"})
    verify(sig.HubSpotV1(), "hs-secret", r, now=0)


def test_hubspot_v2_roundtrip() -> None:
    scheme = sig.HubSpotV1()
    base = SignedRequest(B, {"X-HubSpot-Signature-Version": "v2"}, method="POST", url="https://example.com/h")
    good = scheme.sign("hs-secret", base, "v2")
    verify(scheme, "hs-secret", SignedRequest(B, {**base.headers, "X-HubSpot-Signature": good}, "POST", base.url), now=0)


def test_jira_vector() -> None:
    verify(sig.JiraSignature(), "jira-secret", SignedRequest(B, {
        "X-Hub-Signature": "sha256=5c915568d0d8fe1f2496f22bcb909f2d9eaa9d1d4d5247f555ad06f35e862476"}), now=0)


def test_standard_webhooks_vector() -> None:
    headers = {"webhook-id": "msg_test123", "webhook-timestamp": "1700000000",
               "webhook-signature": "v1,m+THShcksOgtr4Mo1GCVoWIPFY3g/a4e7uuMj9f6+UM="}
    secret = "whsec_ZmF0aG9tLXRlc3Qta2V5LTAxMjM0NTY3ODlhYmNkZWY="
    v = verify(sig.StandardWebhooks(), secret, SignedRequest(B, headers), now=1700000000)
    assert v.event_id == "msg_test123"
    # Rotation: several signatures in one header, any match is enough.
    rotated = {**headers, "webhook-signature": "v1,AAAA v1,m+THShcksOgtr4Mo1GCVoWIPFY3g/a4e7uuMj9f6+UM="}
    verify(sig.StandardWebhooks(), secret, SignedRequest(B, rotated), now=1700000000)
    # The id is signed: changing it breaks the signature.
    with pytest.raises(SignatureFailure):
        verify(sig.StandardWebhooks(), secret, SignedRequest(B, {**headers, "webhook-id": "msg_other"}), now=1700000000)
    with pytest.raises(SignatureFailure) as ei:
        verify(sig.StandardWebhooks(), secret, SignedRequest(B, headers), now=1700000301)
    assert ei.value.reason == "stale"


def test_gong_jwt_body_hash_vector() -> None:
    assert hashlib.sha256(B).hexdigest() == "93a23971a914e5eacbf0a8d25154cda309c3c1c72fbb9914d47c60f3cb681588"


def test_gong_jwt_roundtrip() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    now = int(time.time())
    claims = {"body_sha256": hashlib.sha256(B).hexdigest(), "webhook_url": "https://h/x", "iat": now, "exp": now + 300}
    token = jwt.encode({"alg": "RS256"}, claims, RSAKey.import_key(priv))
    scheme = sig.JwtSignature(check_url=True)
    verify(scheme, pub, SignedRequest(B, {"Authorization": "Bearer " + token}, url="https://h/x"), now=now)
    with pytest.raises(SignatureFailure):  # body changed
        verify(scheme, pub, SignedRequest(b"{}", {"Authorization": token}, url="https://h/x"), now=now)
    with pytest.raises(SignatureFailure) as ei:  # expired
        verify(scheme, pub, SignedRequest(B, {"Authorization": token}, url="https://h/x"), now=now + 3600)
    assert ei.value.reason == "stale"
    with pytest.raises(SignatureFailure):  # garbage
        verify(scheme, pub, SignedRequest(B, {"Authorization": "Bearer nope"}, url="https://h/x"), now=now)


def test_shared_secret_header() -> None:
    scheme = sig.SharedSecretHeader(header="X-Webhook-Secret")
    verify(scheme, "s3cr3t", SignedRequest(B, {"x-webhook-secret": "s3cr3t"}), now=0)
    with pytest.raises(SignatureFailure):
        verify(scheme, "s3cr3t", SignedRequest(B, {"x-webhook-secret": "s3cr3"}), now=0)


@pytest.mark.parametrize("scheme", [sig.SlackSignature(), sig.GitHubSignature(), sig.StandardWebhooks(),
                                    sig.HubSpotV3(), sig.SharedSecretHeader(), sig.HubSpotV1()])
def test_missing_header_and_secret(scheme: object) -> None:
    with pytest.raises(SignatureFailure) as ei:
        verify(scheme, "whsec_c2VjcmV0", SignedRequest(B, {}), now=0)  # type: ignore[arg-type]
    assert ei.value.reason == "missing_header"
    with pytest.raises(SignatureFailure) as ei:
        verify(scheme, None, SignedRequest(B, {}), now=0)  # type: ignore[arg-type]
    assert ei.value.reason == "no_secret"
    assert ei.value.http_status == 401


def test_sign_roundtrip_and_body_with_braces() -> None:
    scheme = sig.HmacSignature(header="X-Sig", message="{timestamp}.{body}", timestamp_header="X-Ts",
                               tolerance_seconds=10)
    body = b'{"a":"{timestamp}{body}"}'
    base = SignedRequest(body, {"X-Ts": "100"})
    s = scheme.sign("k", base)
    verify(scheme, "k", SignedRequest(body, {"X-Ts": "100", "X-Sig": s}), now=105)


def test_resolve_secret_prefers_connection_setting() -> None:
    scheme = sig.SlackSignature()
    assert sig.resolve_secret(scheme, settings={"webhook_secret": "conn"}, environ={"SLACK_SIGNING_SECRET": "env"}) == "conn"
    assert sig.resolve_secret(scheme, settings={}, environ={"SLACK_SIGNING_SECRET": "env"}) == "env"
    assert sig.resolve_secret(scheme, settings=None, environ={}) is None


def test_error_text_never_contains_secret_or_expected() -> None:
    r = SignedRequest(B, {"X-Hub-Signature-256": "sha256=00"})
    with pytest.raises(SignatureFailure) as ei:
        verify(sig.GitHubSignature(), "whsec-test", r, now=0)
    assert "whsec-test" not in str(ei.value)
    assert "dd6de9189" not in str(ei.value)


def test_gong_jwt_url_compared_as_gong_does_and_bare_base64_key_accepted() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    bare = "".join(line for line in pub.splitlines() if not line.startswith("-----"))
    now = int(time.time())

    def token(url: str) -> str:
        claims = {"body_sha256": hashlib.sha256(B).hexdigest(), "webhook_url": url, "iat": now, "exp": now + 300}
        return jwt.encode({"alg": "RS256"}, claims, RSAKey.import_key(priv))

    scheme = sig.JwtSignature(check_url=True)
    here = "https://hooks.example.com/hissuno/api/plugins/webhook/gong/c1"
    # Host case, a trailing slash and a query do not matter; the key may be pasted without its PEM lines.
    for claimed in ("https://HOOKS.example.com/hissuno/api/plugins/webhook/gong/c1/", here + "?x=1"):
        verify(scheme, bare, SignedRequest(B, {"Authorization": token(claimed)}, url=here), now=now)
    for other in ("https://hooks.example.com/hissuno/api/plugins/webhook/gong/c2",
                  "http://hooks.example.com/hissuno/api/plugins/webhook/gong/c1",
                  "https://evil.example.com/hissuno/api/plugins/webhook/gong/c1"):
        with pytest.raises(SignatureFailure) as ei:
            verify(scheme, pub, SignedRequest(B, {"Authorization": token(other)}, url=here), now=now)
        assert ei.value.reason == "bad_signature" and "webhook_url" in str(ei.value)


def test_notion_handshake_secret_only_from_a_bare_verification_body() -> None:
    scheme = sig.NotionSignature()
    assert scheme.handshake_secret(b'{"verification_token": "secret_abc123456"}') == "secret_abc123456"
    # Anything else is an ordinary delivery (verified as usual): extra fields, other shapes, junk tokens.
    for body in (b'{"verification_token": "secret_abc123456", "type": "page.created"}', b'{"id": "x"}',
                 b'["verification_token"]', b"not json", b'{"verification_token": 12345678}',
                 b'{"verification_token": "short"}', b'{"verification_token": "has\\nnewline-123"}'):
        assert scheme.handshake_secret(body) is None, body
    assert sig.GitHubSignature().handshake_secret(b'{"verification_token": "secret_abc123456"}') is None
