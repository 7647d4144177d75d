"""JWT: verify bearer tokens (SPEC §4) and sign them for `reference token`."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from reference.errors import AuthError, ConfigError
from reference.messages import Principal
from reference.settings import Settings

_SYMMETRIC = {"HS256", "HS384", "HS512"}


@dataclass(frozen=True, slots=True)
class JwtKeys:
    """What verifies tokens, and (when we hold a secret) what signs them."""

    verify_key: Any
    algorithms: tuple[str, ...]
    signing_key: str | None
    ephemeral: bool = False  # a secret made up at start-up, for the in-memory default only

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtKeys:
        if settings.jwt_secret and settings.jwt_public_key_file:
            raise ConfigError("set REFERENCE_JWT_SECRET or REFERENCE_JWT_PUBLIC_KEY_FILE, not both")
        if settings.jwt_public_key_file:
            path = Path(settings.jwt_public_key_file)
            try:
                key = path.read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read JWT public key {path}: {exc.strerror}") from None
            algorithms = settings.jwt_algorithms or ("RS256",)
            if set(algorithms) & _SYMMETRIC:
                raise ConfigError("a public key cannot verify HS* algorithms")
            return cls(key, algorithms, None)
        if settings.jwt_secret:
            secret = settings.jwt_secret
            return cls(secret, settings.jwt_algorithms or ("HS256",), secret)
        if settings.all_memory:
            secret = secrets.token_urlsafe(32)
            return cls(secret, ("HS256",), secret, ephemeral=True)
        raise ConfigError(
            "no JWT key configured: set REFERENCE_JWT_SECRET or REFERENCE_JWT_PUBLIC_KEY_FILE "
            "(only the all-memory:// default makes up a key of its own)"
        )


def _why_refused(exc: Exception) -> str:
    """Why a token was refused, in fixed words: never the library's text, which may quote
    the token's bytes back."""
    reasons: tuple[tuple[type[Exception], str], ...] = (
        (jwt.ExpiredSignatureError, "token expired"),
        (jwt.ImmatureSignatureError, "token not yet valid"),
        (jwt.InvalidSignatureError, "invalid token: signature verification failed"),
        (jwt.InvalidAudienceError, "invalid token: wrong audience"),
        (jwt.InvalidIssuerError, "invalid token: wrong issuer"),
        (jwt.MissingRequiredClaimError, "invalid token: a required claim is missing"),
        (jwt.InvalidAlgorithmError, "invalid token: algorithm not allowed"),
        (jwt.DecodeError, "invalid token: not a JWT"),
    )
    if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim in _REQUIRABLE:
        return f"invalid token: the {exc.claim} claim is missing"
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    return "invalid token"


_REQUIRABLE = frozenset({"exp", "sub", "aud", "iss"})


class JwtVerifier:
    """Verifies bearer tokens; remembers tokens it verified until they expire.

    A client sends the same token with every request; checking its signature once is enough.
    The cache is keyed by the whole token, holds only tokens that passed every check, and
    drops each one at its `exp`."""

    CACHE_SIZE = 10_000

    def __init__(self, keys: JwtKeys, *, audience: str | None, issuer: str | None) -> None:
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        required = ["exp", "sub"]
        if audience:
            required.append("aud")
        if issuer:
            required.append("iss")
        self._options: dict[str, Any] = {"require": required}

    def verify_header(self, header: str | None) -> Principal:
        """Turn an Authorization header into a Principal, or raise AuthError."""
        if not header:
            raise AuthError("no bearer token", token_present=False)
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("Authorization must be 'Bearer <token>'", token_present=True)
        return self.verify(token)

    def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            if time.time() < cached[0]:
                return cached[1]
            del self._cache[token]
        principal, exp = self._verify(token)
        self._cache[token] = (exp, principal)
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._keys.verify_key,
                algorithms=list(self._keys.algorithms),
                audience=self._audience,
                issuer=self._issuer,
                options=self._options,  # type: ignore[arg-type]
            )
        except Exception as exc:  # whatever PyJWT raised (a non-UTF-8 byte: UnicodeError)
            raise AuthError(_why_refused(exc), token_present=True) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError("sub must be a non-empty string", token_present=True)
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthError("roles must be a list of strings", token_present=True)
        return Principal(sub=sub, roles=tuple(roles)), float(claims["exp"])


def sign_token(
    keys: JwtKeys,
    *,
    sub: str,
    roles: tuple[str, ...] = (),
    ttl_s: int = 3600,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    if keys.signing_key is None:
        raise ConfigError("only a public key is configured: it can verify tokens, not sign them")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "nbf": now, "exp": now + ttl_s}
    if roles:
        claims["roles"] = list(roles)
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, keys.signing_key, algorithm=keys.algorithms[0])
