"""JWT verification: every way a token can fail, and the ways it must pass."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from reference.auth import JwtKeys, JwtVerifier, sign_token
from reference.errors import AuthError, ConfigError
from reference.settings import Settings

SECRET = "s" * 32


def verifier(**settings: Any) -> JwtVerifier:
    s = Settings(jwt_secret=SECRET).replace(**settings)
    return JwtVerifier(JwtKeys.from_settings(s), audience=s.jwt_audience, issuer=s.jwt_issuer)


def token(claims: dict[str, Any], key: str = SECRET, alg: str = "HS256") -> str:
    base = {"sub": "alice", "exp": int(time.time()) + 60}
    return jwt.encode({**base, **claims}, key, algorithm=alg)


def test_valid_token_gives_principal_with_roles() -> None:
    """A good token yields its sub and roles."""
    p = verifier().verify_header("Bearer " + token({"roles": ["admin"]}))
    assert (p.sub, p.roles) == ("alice", ("admin",))


@pytest.mark.parametrize(
    ("header", "present"),
    [(None, False), ("", False), ("Basic abc", True), ("Bearer", True), ("Bearer  ", True)],
)
def test_missing_or_malformed_header(header: str | None, present: bool) -> None:
    """No credentials, or not the Bearer scheme: AuthError that says whether a token came."""
    with pytest.raises(AuthError) as info:
        verifier().verify_header(header)
    assert info.value.token_present is present


@pytest.mark.parametrize(
    ("claims", "key", "alg", "why"),
    [
        ({"exp": int(time.time()) - 10}, SECRET, "HS256", "expired"),
        ({"nbf": int(time.time()) + 600}, SECRET, "HS256", "not yet valid"),
        ({}, "another-secret-another-secret-xx", "HS256", "signature"),
        ({"sub": None}, SECRET, "HS256", "sub"),
        ({"roles": "admin"}, SECRET, "HS256", "roles"),
        ({}, SECRET, "HS512", "alg"),
    ],
)
def test_bad_tokens_are_refused(claims: dict[str, Any], key: str, alg: str, why: str) -> None:
    """Expired, immature, wrongly signed, sub-less, bad roles, unlisted alg: all refused."""
    if claims.get("sub", "x") is None:
        raw = jwt.encode({"exp": int(time.time()) + 60}, key, algorithm=alg)
    else:
        raw = token(claims, key, alg)
    with pytest.raises(AuthError, match=why) as info:
        verifier().verify("garbage" if not raw else raw)
    assert info.value.token_present


def test_alg_none_is_refused() -> None:
    """An unsigned token (alg none) never passes, whatever it claims."""
    raw = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(AuthError):
        verifier().verify(raw)


def test_token_without_exp_is_refused() -> None:
    """exp is required."""
    raw = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="exp"):
        verifier().verify(raw)


def test_audience_and_issuer_are_checked_when_configured() -> None:
    """With aud and iss configured, tokens lacking or mismatching them fail."""
    v = verifier(jwt_audience="api", jwt_issuer="me")
    assert v.verify(token({"aud": "api", "iss": "me"})).sub == "alice"
    for claims in ({"aud": "other", "iss": "me"}, {"aud": "api", "iss": "you"}, {"iss": "me"}):
        with pytest.raises(AuthError):
            v.verify(token(claims))


def test_rs256_public_key_verifies_and_cannot_sign(tmp_path: Path) -> None:
    """With only a public key, RS256 tokens verify, and signing is refused in one line."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / "pub.pem"
    path.write_bytes(pem)
    keys = JwtKeys.from_settings(Settings(jwt_public_key_file=str(path)))
    v = JwtVerifier(keys, audience=None, issuer=None)
    raw = jwt.encode({"sub": "bob", "exp": int(time.time()) + 60}, private, algorithm="RS256")
    assert v.verify(raw).sub == "bob"
    # An HS256 token signed with the public key text as secret (key confusion) is refused.
    with pytest.raises(AuthError):
        v.verify(jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "k" * 32))
    with pytest.raises(ConfigError, match="public key"):
        sign_token(keys, sub="bob")


def test_real_brokers_without_a_key_refuse_to_start() -> None:
    """No JWT key with real broker URLs is a ConfigError naming the variables."""
    s = Settings(broker_url="amqp://localhost/", store_url="redis://localhost/")
    with pytest.raises(ConfigError, match="REFERENCE_JWT_SECRET"):
        JwtKeys.from_settings(s)


def test_memory_default_makes_an_ephemeral_key() -> None:
    """The all-memory default signs and verifies with a key made up at start-up."""
    keys = JwtKeys.from_settings(Settings())
    assert keys.ephemeral
    v = JwtVerifier(keys, audience=None, issuer=None)
    assert v.verify(sign_token(keys, sub="dev", roles=("a",))).roles == ("a",)


def test_a_cached_token_still_expires() -> None:
    """A token verified once is remembered, but not past its exp."""
    v = verifier()
    exp = int(time.time()) + 2  # whole seconds: at least one second of validity left
    raw = token({"exp": exp})
    assert v.verify(raw).sub == "alice"
    assert v.verify(raw).sub == "alice"
    time.sleep(exp - time.time() + 0.05)
    with pytest.raises(AuthError, match="expired"):
        v.verify(raw)


def test_the_cache_does_not_accept_a_forged_twin() -> None:
    """A token differing from a cached one in any byte is verified afresh (and fails)."""
    v = verifier()
    raw = token({})
    v.verify(raw)
    header, payload, signature = raw.split(".")
    tail = "AA" if signature[-2:] != "AA" else "BB"
    forged = ".".join([header, payload, signature[:-2] + tail])
    with pytest.raises(AuthError):
        v.verify(forged)
