"""JWT: verify bearer tokens (docs/contract.md §8) and sign them for `reference token`.

Keys come from configuration only, in one of these shapes:

- HS secrets: `REFERENCE_JWT_SECRET` signs and verifies; `REFERENCE_JWT_PREVIOUS_SECRETS` only
  verify, so that a secret can be rotated without refusing the tokens already issued.
- One PEM public key (`REFERENCE_JWT_PUBLIC_KEY_FILE`): verifies only.
- A JWKS (`REFERENCE_JWT_JWKS_FILE` or `_URL`): public keys chosen by the token's `kid`, held
  in memory by a `JwksKeySource` and refreshed in the background, so that verification stays
  synchronous and never waits on a file or the network. A JWKS may be combined with a secret
  (the secret signs; HS tokens go to the secrets, RS/PS/ES/EdDSA tokens to the JWKS).

The algorithms always come from configuration (`REFERENCE_JWT_ALGORITHMS`), never from the
token; the token's `alg` only picks among them, and its `jku`, `x5u` and `jwk` headers are
never used.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from reference.backoff import Backoff, keep_running, stop_task
from reference.errors import AuthError, ConfigError
from reference.messages import Principal
from reference.settings import Settings

log = logging.getLogger(__name__)

_SYMMETRIC = {"HS256", "HS384", "HS512"}
# What each kind of public key can verify: (kty, crv) -> algorithms. RSA keys have no crv.
_FITS: dict[tuple[str, str | None], frozenset[str]] = {
    ("RSA", None): frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-384"): frozenset({"ES384"}),
    ("EC", "P-521"): frozenset({"ES512", "ES521"}),
    ("EC", "secp256k1"): frozenset({"ES256K"}),
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
    ("OKP", "Ed448"): frozenset({"EdDSA"}),
}
_ASYMMETRIC = frozenset(alg for algs in _FITS.values() for alg in algs)
KNOWN_ALGORITHMS = frozenset(_SYMMETRIC) | _ASYMMETRIC
DEFAULT_JWKS_ALGORITHMS = ("RS256", "ES256")
_LOOPBACK_NAMES = {"localhost"}


class JwksError(Exception):
    """A JWKS could not be read or is not usable; the message is one line and quotes no key
    material."""


class _UnknownKey(jwt.InvalidTokenError):
    """The token's kid names no key of the JWKS."""


class _NoKeyId(jwt.InvalidTokenError):
    """A token for a JWKS key carries no kid."""


@dataclass(frozen=True, slots=True)
class JwtKeys:
    """What verifies tokens, and (when we hold a secret) what signs them.

    `verify_key` is the current secret, or the PEM public key, or None when only a JWKS
    verifies. `previous_secrets` verify HS tokens too but never sign. `jwks`, when set, holds
    the public keys chosen by kid."""

    verify_key: Any
    algorithms: tuple[str, ...]
    signing_key: str | None
    ephemeral: bool = False  # a secret made up at start-up, for the in-memory default only
    previous_secrets: tuple[str, ...] = ()
    jwks: JwksKeySource | None = None

    @property
    def hs_secrets(self) -> tuple[str, ...]:
        """Every secret that verifies HS tokens, the signing one first."""
        if self.signing_key is None:
            return ()
        return (self.signing_key, *self.previous_secrets)

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtKeys:
        s = settings
        if s.jwt_jwks_file and s.jwt_jwks_url:
            raise ConfigError("set REFERENCE_JWT_JWKS_FILE or REFERENCE_JWT_JWKS_URL, not both")
        with_jwks = bool(s.jwt_jwks_file or s.jwt_jwks_url)
        if s.jwt_public_key_file and with_jwks:
            raise ConfigError(
                "set REFERENCE_JWT_PUBLIC_KEY_FILE or a JWKS (REFERENCE_JWT_JWKS_FILE/_URL), "
                "not both: put the public key in the JWKS, with a kid")
        if s.jwt_secret and s.jwt_public_key_file:
            raise ConfigError("set REFERENCE_JWT_SECRET or REFERENCE_JWT_PUBLIC_KEY_FILE, not both")
        if s.jwt_previous_secrets and not s.jwt_secret:
            raise ConfigError("REFERENCE_JWT_PREVIOUS_SECRETS needs REFERENCE_JWT_SECRET, "
                              "the secret that signs")
        _check_algorithms(s.jwt_algorithms)
        if s.jwt_public_key_file:
            path = Path(s.jwt_public_key_file)
            try:
                key = path.read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read JWT public key {path}: {exc.strerror}") from None
            algorithms = s.jwt_algorithms or ("RS256",)
            if set(algorithms) & _SYMMETRIC:
                raise ConfigError("a public key cannot verify HS* algorithms")
            return cls(key, algorithms, None)
        if with_jwks:
            default = (("HS256",) if s.jwt_secret else ()) + DEFAULT_JWKS_ALGORITHMS
            algorithms = s.jwt_algorithms or default
            symmetric = [a for a in algorithms if a in _SYMMETRIC]
            asymmetric = tuple(a for a in algorithms if a not in _SYMMETRIC)
            if symmetric and not s.jwt_secret:
                raise ConfigError("HS* algorithms need REFERENCE_JWT_SECRET: a JWKS verifies "
                                  "only RS*, PS*, ES* and EdDSA tokens")
            if s.jwt_secret and not symmetric:
                raise ConfigError("REFERENCE_JWT_SECRET is set but REFERENCE_JWT_ALGORITHMS "
                                  "lists no HS* algorithm")
            if not asymmetric:
                raise ConfigError("a JWKS needs an RS*, PS*, ES* or EdDSA algorithm in "
                                  "REFERENCE_JWT_ALGORITHMS")
            source = JwksKeySource(file=s.jwt_jwks_file, url=s.jwt_jwks_url,
                                   algorithms=asymmetric, refresh_s=s.jwt_jwks_refresh_s)
            source.load_now()
            return cls(s.jwt_secret, algorithms, s.jwt_secret,
                       previous_secrets=s.jwt_previous_secrets, jwks=source)
        if s.jwt_secret:
            secret = s.jwt_secret
            algorithms = s.jwt_algorithms or ("HS256",)
            if not set(algorithms) <= _SYMMETRIC:
                raise ConfigError("REFERENCE_JWT_SECRET verifies only HS* algorithms: RS*, PS*, "
                                  "ES* and EdDSA need REFERENCE_JWT_PUBLIC_KEY_FILE or a JWKS")
            return cls(secret, algorithms, secret, previous_secrets=s.jwt_previous_secrets)
        if s.all_memory:
            secret = secrets.token_urlsafe(32)
            return cls(secret, ("HS256",), secret, ephemeral=True)
        raise ConfigError(
            "no JWT key configured: set REFERENCE_JWT_SECRET, REFERENCE_JWT_PUBLIC_KEY_FILE, "
            "REFERENCE_JWT_JWKS_FILE or REFERENCE_JWT_JWKS_URL "
            "(only the all-memory:// default makes up a key of its own)"
        )


def _check_algorithms(algorithms: tuple[str, ...]) -> None:
    for alg in algorithms:
        if alg not in KNOWN_ALGORITHMS:
            known = ", ".join(sorted(KNOWN_ALGORITHMS))
            raise ConfigError(f"REFERENCE_JWT_ALGORITHMS: {alg!r} is not accepted "
                              f"(use some of {known})")


# --- JWKS -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _KeyTable:
    """One loaded JWKS: kid -> {algorithm -> key bound to that algorithm}."""

    by_kid: Mapping[str, Mapping[str, jwt.PyJWK]]
    digest: str  # of the document's bytes: an unchanged document is not parsed again


_EMPTY = _KeyTable({}, "")


class JwksKeySource:
    """Public keys from a JWKS file or URL, by kid, in memory; refreshed in the background.

    `key(kid, alg)` is synchronous and only reads memory. `start()` (in the serving event loop)
    loads the set if it is not loaded yet and starts a task that reloads it every
    `refresh_s` (a file only when its mtime, size or inode changed; a URL with a bounded GET:
    `fetch_timeout_s` for the whole answer, at most `max_bytes`, no redirects). A kid that is
    not in the set wakes that task early, at most once per `early_refresh_min_s`; the token
    itself is refused at once. A document that cannot be read or used leaves the keys in use
    as they were. `close()` stops the task. start/close are counted: several verifiers may
    share one source, and the task stops with the last close.

    JWKs are parsed by PyJWT (`jwt.PyJWK`), each bound to one algorithm. A JWK is skipped
    (and logged, without its key material) when it has no kid, holds a private or symmetric
    key, is not for signatures (`use`/`key_ops`), or fits none of the configured algorithms
    (its `alg`, or its kty and crv when it names none)."""

    MAX_KEYS = 100
    MAX_BYTES = 1024 * 1024
    FETCH_TIMEOUT_S = 5.0
    EARLY_REFRESH_MIN_S = 10.0
    MAX_RETRY_PAUSE_S = 60.0

    def __init__(
        self,
        *,
        file: str | None = None,
        url: str | None = None,
        algorithms: tuple[str, ...] = DEFAULT_JWKS_ALGORITHMS,
        refresh_s: float = 300.0,
        fetch_timeout_s: float | None = None,
        max_bytes: int | None = None,
        max_keys: int | None = None,
        early_refresh_min_s: float | None = None,
    ) -> None:
        if (file is None) == (url is None):
            raise ConfigError("a JWKS comes from one file or one URL")
        if url is not None:
            _check_url(url)
        bad = [a for a in algorithms if a not in _ASYMMETRIC]
        if bad or not algorithms:
            raise ConfigError(f"a JWKS verifies only RS*, PS*, ES* and EdDSA, not {bad or '()'}")
        if refresh_s <= 0:
            raise ConfigError("REFERENCE_JWT_JWKS_REFRESH_S must be positive")
        self._file = file
        self._url = url
        self.algorithms = tuple(algorithms)
        self.refresh_s = refresh_s
        self.fetch_timeout_s = fetch_timeout_s if fetch_timeout_s is not None \
            else self.FETCH_TIMEOUT_S
        self.max_bytes = max_bytes if max_bytes is not None else self.MAX_BYTES
        self.max_keys = max_keys if max_keys is not None else self.MAX_KEYS
        self.early_refresh_min_s = (early_refresh_min_s if early_refresh_min_s is not None
                                    else min(self.EARLY_REFRESH_MIN_S, refresh_s))
        self._table = _EMPTY
        self._revision = 0
        self._loaded = False
        self._file_stamp: tuple[int, int, int] | None = None
        self._etag: str | None = None
        self._last_early = float("-inf")  # time.monotonic() of the last early refresh
        self._lock = threading.Lock()  # guards _last_early: verify may run on any thread
        self._failed = False
        self._users = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._client: httpx.AsyncClient | None = None

    # --- reading (synchronous, memory only) ---------------------------------------------------

    @property
    def where(self) -> str:
        return self._file if self._file is not None else str(self._url)

    @property
    def revision(self) -> int:
        """Goes up by one each time the key set changes."""
        return self._revision

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._table.by_kid)

    def key(self, kid: object, alg: str) -> jwt.PyJWK:
        """The key for a token's kid and alg; `_UnknownKey` (and an early refresh, rate
        limited) when the kid is not in the set, `InvalidAlgorithmError` when the key does not
        take that algorithm."""
        if not isinstance(kid, str):
            raise _UnknownKey
        by_alg = self._table.by_kid.get(kid)
        if by_alg is None:
            self.request_refresh()
            raise _UnknownKey
        key = by_alg.get(alg)
        if key is None:
            raise jwt.InvalidAlgorithmError
        return key

    def request_refresh(self) -> bool:
        """Wake the refresh task now, unless it was woken early less than
        `early_refresh_min_s` ago or is not running. Safe from any thread; never waits."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return False
        now = time.monotonic()
        with self._lock:
            if now - self._last_early < self.early_refresh_min_s:
                return False
            self._last_early = now
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop is closed
            return False
        return True

    # --- loading --------------------------------------------------------------------------------

    def load_now(self) -> None:
        """Read a JWKS file now (at start-up, before serving): ConfigError in one line if it
        is missing, too large, or not a JWKS with a usable key. Does nothing for a URL: that
        is fetched by `start()`, in the event loop."""
        if self._file is None:
            return
        try:
            raw = self._read_file(force=True)
            assert raw is not None
            self._install(self._parse(raw))
        except JwksError as exc:
            raise ConfigError(str(exc)) from None

    async def refresh(self, *, force: bool = False) -> bool:
        """Load the set now: True if it changed. A file is re-read only when its stamp changed
        (or `force`); a URL is fetched (with If-None-Match). Raises JwksError (in one line)
        when the document cannot be had or used; the keys in use then stay as they were."""
        try:
            if self._file is not None:
                raw = await asyncio.to_thread(self._read_file, force=force or not self._loaded)
                etag = None
            else:
                raw, etag = await self._fetch(conditional=not force)
            if raw is None:
                self._failed = False
                return False
            changed = self._install(self._parse(raw))
        except BaseException:
            self._failed = True
            raise
        self._etag = etag
        self._failed = False
        return changed

    def _read_file(self, *, force: bool) -> bytes | None:
        assert self._file is not None
        path = self._file
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if not force and stamp == self._file_stamp:
                return None
            if st.st_size > self.max_bytes:
                raise JwksError(f"JWKS file {path} is larger than {self.max_bytes} bytes")
            with open(path, "rb") as f:
                raw = f.read(self.max_bytes + 1)
        except OSError as exc:
            raise JwksError(f"cannot read JWKS file {path}: {exc.strerror}") from None
        if len(raw) > self.max_bytes:
            raise JwksError(f"JWKS file {path} is larger than {self.max_bytes} bytes")
        self._file_stamp = stamp
        return raw

    async def _fetch(self, *, conditional: bool) -> tuple[bytes | None, str | None]:
        """GET the URL: (body, etag), or (None, None) for 304 Not Modified."""
        url = str(self._url)
        client = self._client
        own = client is None
        if client is None:
            client = self._new_client()
        headers = {}
        if conditional and self._loaded and self._etag:
            headers["If-None-Match"] = self._etag
        try:
            async with asyncio.timeout(self.fetch_timeout_s):
                async with client.stream("GET", url, headers=headers) as response:
                    if response.status_code == 304 and headers:
                        return None, None
                    if response.status_code != 200:
                        raise JwksError(f"JWKS {url}: HTTP {response.status_code}")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > self.max_bytes:
                        raise JwksError(f"JWKS {url}: larger than {self.max_bytes} bytes")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise JwksError(f"JWKS {url}: larger than {self.max_bytes} bytes")
                    return bytes(body), response.headers.get("etag")
        except TimeoutError:
            raise JwksError(
                f"JWKS {url}: no complete answer within {self.fetch_timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise JwksError(f"JWKS {url}: {type(exc).__name__}") from None
        finally:
            if own:
                await client.aclose()

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.fetch_timeout_s), follow_redirects=False,
            headers={"Accept": "application/jwk-set+json, application/json",
                     "Accept-Encoding": "identity"},
        )

    def _parse(self, raw: bytes) -> _KeyTable:
        where = self.where
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._table.digest:
            return self._table
        try:
            doc = json.loads(raw)
        except ValueError:  # also a byte that is not UTF-8
            raise JwksError(f"JWKS {where} is not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise JwksError(f"JWKS {where} is not a JWK Set (an object with a \"keys\" list)")
        jwks: list[Any] = doc["keys"]
        if len(jwks) > self.max_keys:
            raise JwksError(f"JWKS {where} has {len(jwks)} keys, more than {self.max_keys}")
        by_kid: dict[str, dict[str, jwt.PyJWK]] = {}
        skipped: list[str] = []
        for i, jwk in enumerate(jwks):
            kid, why = self._admit(jwk, by_kid)
            if why is not None:
                skipped.append(f"#{i}" + (f" kid {kid!r}" if kid else "") + f": {why}")
        if skipped:
            log.warning("JWKS %s: %d key(s) skipped: %s", where, len(skipped), "; ".join(skipped))
        if not by_kid:
            raise JwksError(f"JWKS {where} has no key usable with "
                            f"{', '.join(self.algorithms)} ({len(skipped)} skipped)")
        return _KeyTable(by_kid, digest)

    def _admit(self, jwk: object, by_kid: dict[str, dict[str, jwt.PyJWK]],
               ) -> tuple[str | None, str | None]:
        """Add one JWK's keys to `by_kid`: (kid, None), or (kid, why it was skipped)."""
        if not isinstance(jwk, dict):
            return None, "not an object"
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            return None, "no kid"
        shown = kid[:64]
        kty, crv, alg = jwk.get("kty"), jwk.get("crv"), jwk.get("alg")
        if kty == "oct":
            return shown, "a symmetric key (HS secrets come only from REFERENCE_JWT_SECRET)"
        if "d" in jwk:
            return shown, "holds a private key"
        if jwk.get("use", "sig") != "sig":
            return shown, "not for signatures (use)"
        ops = jwk.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            return shown, "not for verification (key_ops)"
        curve = None if kty == "RSA" or not isinstance(crv, str) else crv
        fits = _FITS.get((kty, curve), frozenset()) if isinstance(kty, str) else frozenset()
        if alg is not None:
            if not isinstance(alg, str) or alg not in self.algorithms or alg not in fits:
                return shown, "its alg is not allowed or does not fit its key type"
            candidates = [alg]
        else:
            candidates = [a for a in self.algorithms if a in fits]
            if not candidates:
                return shown, "its key type fits none of the allowed algorithms"
        if kid in by_kid:
            return shown, "a second key with this kid"
        keys: dict[str, jwt.PyJWK] = {}
        for a in candidates:
            try:
                keys[a] = jwt.PyJWK(jwk, algorithm=a)
            except Exception as exc:  # PyJWT's text may quote the key: name the kind only
                return shown, f"unusable ({type(exc).__name__})"
        by_kid[kid] = keys
        return kid, None

    def _install(self, table: _KeyTable) -> bool:
        self._loaded = True
        if table is self._table:
            return False
        old = set(self._table.by_kid)
        self._table = table
        self._revision += 1
        new = set(table.by_kid)
        log.info("JWKS %s: %d key(s) in use%s%s", self.where, len(new),
                 f", added {sorted(new - old)}" if new - old else "",
                 f", removed {sorted(old - new)}" if old - new else "")
        return True

    # --- the refresh task -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the set if it is not loaded (a failure is logged: tokens are refused as
        'unknown key' until a load succeeds) and start the refresh task in this loop."""
        self._users += 1
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._url is not None:
            self._client = self._new_client()
        if not self._loaded:
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("JWKS %s: %s; retrying in the background", self.where, exc)
        pause = min(1.0, self.refresh_s)
        backoff = Backoff(pause, max(pause, min(self.MAX_RETRY_PAUSE_S, self.refresh_s)))
        self._task = asyncio.create_task(
            keep_running(self._step, name=f"JWKS refresh {self.where}", backoff=backoff),
            name=f"jwks-refresh {self.where}")

    async def _step(self) -> None:
        wake = self._wake
        assert wake is not None
        if not self._failed:  # after a failure keep_running has paused already: go on
            try:
                await asyncio.wait_for(wake.wait(), timeout=self.refresh_s)
            except TimeoutError:
                pass
        wake.clear()
        await self.refresh()

    async def close(self) -> None:
        """Stop the refresh task (with the last of the callers of start). The keys stay."""
        if self._users > 0:
            self._users -= 1
        if self._users > 0:
            return
        task, self._task = self._task, None
        await stop_task(task)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        self._loop = None
        self._wake = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()


def _check_url(url: str) -> None:
    """https, or http to a loopback host only (a local IdP or a test)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        raise ConfigError(f"REFERENCE_JWT_JWKS_URL is not a URL: {url!r}") from None
    if not host:
        raise ConfigError(f"REFERENCE_JWT_JWKS_URL has no host: {url!r}")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and _is_loopback(host):
        return
    raise ConfigError(f"REFERENCE_JWT_JWKS_URL must be https:// (http:// only to a loopback "
                      f"host), not {url!r}")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- verification -------------------------------------------------------------------------------


def _why_refused(exc: Exception) -> str:
    """Why a token was refused, in fixed words: never the library's text, which may quote
    the token's bytes back."""
    reasons: tuple[tuple[type[Exception], str], ...] = (
        (_UnknownKey, "invalid token: unknown key"),
        (_NoKeyId, "invalid token: no key id"),
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
    drops each one at its `exp`, and all of them when the JWKS changes (a key removed from it
    no longer lets its tokens in).

    Verification is synchronous and reads only memory. With a JWKS, `start()` and `close()`
    (in the serving event loop) run the background refresh; without one they do nothing."""

    CACHE_SIZE = 10_000

    def __init__(self, keys: JwtKeys, *, audience: str | None, issuer: str | None) -> None:
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._keys = keys
        self._jwks = keys.jwks
        self._revision = keys.jwks.revision if keys.jwks is not None else 0
        self._audience = audience
        self._issuer = issuer
        required = ["exp", "sub"]
        if audience:
            required.append("aud")
        if issuer:
            required.append("iss")
        self._options: dict[str, Any] = {"require": required}

    async def start(self) -> None:
        """Start refreshing the JWKS, if there is one (call once the event loop runs)."""
        if self._jwks is not None:
            await self._jwks.start()

    async def close(self) -> None:
        """Stop refreshing the JWKS, if there is one."""
        if self._jwks is not None:
            await self._jwks.close()

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
        jwks = self._jwks
        if jwks is not None and jwks.revision != self._revision:
            self._cache.clear()
            self._revision = jwks.revision
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

    def _decode(self, token: str) -> dict[str, Any]:
        keys = self._keys
        if keys.jwks is None and not keys.previous_secrets:
            return self._decode_with(token, keys.verify_key, list(keys.algorithms))
        header = jwt.get_unverified_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in keys.algorithms:
            raise jwt.InvalidAlgorithmError
        if alg in _SYMMETRIC:
            refused: Exception = jwt.InvalidSignatureError()
            for secret in keys.hs_secrets:
                try:
                    return self._decode_with(token, secret, [alg])
                except jwt.InvalidSignatureError as exc:
                    refused = exc  # perhaps signed with another of the secrets
            raise refused
        if keys.jwks is None:
            return self._decode_with(token, keys.verify_key, [alg])
        kid = header.get("kid")
        if kid is None:
            raise _NoKeyId
        return self._decode_with(token, keys.jwks.key(kid, alg), [alg])

    def _decode_with(self, token: str, key: Any, algorithms: list[str]) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=self._audience,
            issuer=self._issuer,
            options=self._options,  # type: ignore[arg-type]
        )
        return claims

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = self._decode(token)
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
    """A token signed with the current secret (never a previous one), by the first HS
    algorithm configured."""
    if keys.signing_key is None:
        raise ConfigError("only public keys are configured (a public key file or a JWKS): "
                          "they verify tokens, they cannot sign one")
    algorithm = next((a for a in keys.algorithms if a in _SYMMETRIC), keys.algorithms[0])
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "nbf": now, "exp": now + ttl_s}
    if roles:
        claims["roles"] = list(roles)
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, keys.signing_key, algorithm=algorithm)
