"""Keys that rotate: HS secrets, and public keys from a JWKS file or URL chosen by kid."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from reference.auth import JwksError, JwksKeySource, JwtKeys, JwtVerifier, sign_token
from reference.errors import AuthError, ConfigError
from reference.settings import Settings

SECRET = "current-secret-" + "c" * 32
OLD_SECRET = "previous-secret-" + "p" * 32
OLDER_SECRET = "older-secret-" + "o" * 32

RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_C = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_E = ec.generate_private_key(ec.SECP256R1())
JWKS_ALGS = ("RS256", "ES256")
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def jwk(private: PrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    """The public JWK of `private`, with a kid and `extra` members."""
    pub = private.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(pub, as_dict=True)
    else:
        data = ECAlgorithm.to_jwk(pub, as_dict=True)
    if kid is not None:
        data["kid"] = kid
    return {**data, **extra}


def jwks_bytes(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def write_jwks(path: Path, *keys: dict[str, Any]) -> None:
    """Replace the file at once, as a deployment tool would (a new inode)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(jwks_bytes(*keys))
    os.replace(tmp, path)


def signed(private: PrivateKey | str, kid: str | None, alg: str = "RS256",
           **claims: Any) -> str:
    base = {"sub": "alice", "exp": int(time.time()) + 60}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode({**base, **claims}, private, algorithm=alg, headers=headers)


def refused(v: JwtVerifier, token: str) -> str:
    """The reason `v` refuses `token` (the test fails if it is accepted)."""
    with pytest.raises(AuthError) as info:
        v.verify(token)
    assert info.value.token_present
    return str(info.value)


def jwks_verifier(source: JwksKeySource) -> JwtVerifier:
    return JwtVerifier(JwtKeys(None, source.algorithms, None, jwks=source),
                       audience=None, issuer=None)


async def eventually(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class JwksServer:
    """A tiny HTTP/1.1 server on loopback that serves `body`; `delay_s`, `mode` ('ok',
    'drip', 'huge', 'huge_declared'), `status` and `etag` shape the next answers."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.status = 200
        self.delay_s = 0.0
        self.mode = "ok"
        self.etag: str | None = None
        self.requests: list[bytes] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> JwksServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.etag and f"if-none-match: {self.etag}".encode() in head.lower():
                writer.write(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n")
            elif self.mode == "drip":  # every read gets a byte: only a deadline ends it
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n"
                             b"Connection: close\r\n\r\n")
                for _ in range(100_000):
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(0.02)
            elif self.mode in ("huge", "huge_declared"):
                size = 2 * 1024 * 1024
                length = f"Content-Length: {size}\r\n" if self.mode == "huge_declared" else ""
                writer.write(f"HTTP/1.1 200 OK\r\n{length}Connection: close\r\n\r\n".encode())
                for _ in range(size // 65536):
                    writer.write(b" " * 65536)
                    await writer.drain()
            else:
                etag = f"ETag: {self.etag}\r\n" if self.etag else ""
                writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(self.body)}\r\n{etag}"
                             f"Connection: close\r\n\r\n".encode() + self.body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)


@contextlib.asynccontextmanager
async def started(v: JwtVerifier) -> AsyncIterator[JwtVerifier]:
    await v.start()
    try:
        yield v
    finally:
        await v.close()


# --- HS secrets ---------------------------------------------------------------------------------


def test_previous_secrets_verify_and_only_the_current_one_signs() -> None:
    """Tokens of the current and previous secrets pass, another secret's fail, and
    sign_token signs with the current secret only."""
    keys = JwtKeys.from_settings(Settings(jwt_secret=SECRET,
                                          jwt_previous_secrets=(OLD_SECRET, OLDER_SECRET)))
    v = JwtVerifier(keys, audience=None, issuer=None)
    for secret in (SECRET, OLD_SECRET, OLDER_SECRET):
        assert v.verify(signed(secret, None, "HS256")).sub == "alice"
    assert refused(v, signed("unknown-secret-" + "u" * 32, None, "HS256")) == (
        "invalid token: signature verification failed")
    # An expired token of a previous secret says "expired", not "wrong signature".
    assert refused(v, signed(OLD_SECRET, None, "HS256", exp=int(time.time()) - 5)) == (
        "token expired")
    token = sign_token(keys, sub="bob")
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "bob"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, OLD_SECRET, algorithms=["HS256"])
    # Without the previous secrets, the old token is refused: the list is what lets it in.
    alone = JwtVerifier(JwtKeys.from_settings(Settings(jwt_secret=SECRET)),
                        audience=None, issuer=None)
    assert "signature" in refused(alone, signed(OLD_SECRET, None, "HS256"))


# --- JWKS file ----------------------------------------------------------------------------------


def test_jwks_file_chooses_the_key_by_kid(tmp_path: Path) -> None:
    """Two RSA keys and an EC key in a JWKS file: each token is checked with the key its kid
    names, and a kid that names another key fails the signature."""
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(RSA_A, "a"), jwk(RSA_B, "b", alg="RS256", use="sig"), jwk(EC_E, "e"))
    keys = JwtKeys.from_settings(Settings(jwt_jwks_file=str(path)))
    assert keys.algorithms == JWKS_ALGS and keys.signing_key is None
    v = JwtVerifier(keys, audience=None, issuer=None)
    assert v.verify(signed(RSA_A, "a", sub="ann")).sub == "ann"
    assert v.verify(signed(RSA_B, "b", sub="ben")).sub == "ben"
    assert v.verify(signed(EC_E, "e", "ES256", sub="eve")).sub == "eve"
    assert refused(v, signed(RSA_A, "b")) == "invalid token: signature verification failed"
    assert refused(v, signed(EC_E, "a", "ES256")) == "invalid token: algorithm not allowed"
    assert refused(v, signed(RSA_A, None)) == "invalid token: no key id"
    assert refused(v, signed(RSA_A, "z")) == "invalid token: unknown key"
    with pytest.raises(ConfigError, match="public key"):
        sign_token(keys, sub="x")


def test_a_jwk_outside_the_configured_algorithms_is_not_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A JWK whose alg is not configured (or that is private, symmetric, for encryption, or
    without kid) is skipped, and logged without its key material."""
    path = tmp_path / "jwks.json"
    private = {k: v for k, v in RSAAlgorithm.to_jwk(RSA_C, as_dict=True).items()
               if k != "key_ops"}  # a private JWK that does not say it only signs
    write_jwks(path,
               jwk(RSA_A, "a512", alg="RS512"),
               jwk(RSA_B, "b"),
               jwk(RSA_C, "enc", use="enc"),
               {**private, "kid": "private"},
               {"kty": "oct", "k": "c2VjcmV0", "kid": "oct"},
               jwk(RSA_C, None))
    with caplog.at_level(logging.WARNING, logger="reference.auth"):
        v = JwtVerifier(JwtKeys.from_settings(Settings(jwt_jwks_file=str(path))),
                        audience=None, issuer=None)
    # RS256 is configured, but the key says RS512, which is not: not used.
    assert refused(v, signed(RSA_A, "a512")) == "invalid token: unknown key"
    assert refused(v, signed(RSA_A, "a512", "RS512")) == "invalid token: algorithm not allowed"
    for kid in ("enc", "private", "oct"):
        assert refused(v, signed(RSA_C, kid)) == "invalid token: unknown key"
    assert v.verify(signed(RSA_B, "b")).sub == "alice"
    log_text = caplog.text
    assert "5 key(s) skipped" in log_text
    assert private["n"][:40] not in log_text and private["d"][:40] not in log_text
    # With RS512 configured the same key is used, for RS512 only: the filter is what refused it.
    wide = JwtVerifier(JwtKeys.from_settings(Settings(
        jwt_jwks_file=str(path), jwt_algorithms=("RS256", "RS512"))), audience=None, issuer=None)
    assert wide.verify(signed(RSA_A, "a512", "RS512")).sub == "alice"
    assert refused(wide, signed(RSA_A, "a512")) == "invalid token: algorithm not allowed"
    assert wide.verify(signed(RSA_B, "b", "RS512")).sub == "alice"  # no alg: either fits


def test_alg_none_and_hs_tokens_are_refused_with_only_a_jwks(tmp_path: Path) -> None:
    """With only a JWKS, unsigned and HS tokens are refused, whatever their kid."""
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(RSA_A, "a"))
    v = JwtVerifier(JwtKeys.from_settings(Settings(jwt_jwks_file=str(path))),
                    audience=None, issuer=None)
    unsigned = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, None,  # type: ignore[arg-type]
                          algorithm="none", headers={"kid": "a"})
    assert refused(v, unsigned) == "invalid token: algorithm not allowed"
    assert refused(v, signed(SECRET, "a", "HS256")) == "invalid token: algorithm not allowed"


def _hs256_with(secret: bytes, kid: str) -> str:
    """An HS256 token MACed with arbitrary bytes (PyJWT refuses to use a PEM as a secret)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps({"sub": "mallory", "exp": int(time.time()) + 60}).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def test_a_secret_and_a_jwks_together(tmp_path: Path) -> None:
    """A secret (with previous ones) beside a JWKS: HS tokens go to the secrets, RS/ES tokens
    to the JWKS, an HS token MACed with a JWKS public key fails, and the secret signs."""
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(RSA_A, "a"), jwk(EC_E, "e"))
    keys = JwtKeys.from_settings(Settings(jwt_secret=SECRET, jwt_previous_secrets=(OLD_SECRET,),
                                          jwt_jwks_file=str(path)))
    assert keys.algorithms == ("HS256", "RS256", "ES256")
    v = JwtVerifier(keys, audience=None, issuer=None)
    assert v.verify(signed(SECRET, None, "HS256")).sub == "alice"
    assert v.verify(signed(OLD_SECRET, "a", "HS256")).sub == "alice"
    assert v.verify(signed(RSA_A, "a")).sub == "alice"
    assert v.verify(signed(EC_E, "e", "ES256")).sub == "alice"
    pem = RSA_A.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    assert refused(v, _hs256_with(pem, "a")) == "invalid token: signature verification failed"
    token = sign_token(keys, sub="svc")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "svc"


async def test_file_rotation_is_picked_up_without_restart(tmp_path: Path) -> None:
    """A JWKS file rewritten with a new key: a token of the new kid is refused at once, wakes
    a reload, and then passes; a token of the removed key stops passing, cached or not."""
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(RSA_A, "a"))
    source = JwksKeySource(file=str(path), algorithms=JWKS_ALGS, refresh_s=300,
                           early_refresh_min_s=0.0)
    source.load_now()
    async with started(jwks_verifier(source)) as v:
        old = signed(RSA_A, "a")
        assert v.verify(old).sub == "alice"  # now in the verified-token cache
        write_jwks(path, jwk(RSA_B, "b"), jwk(EC_E, "e"))
        revision = source.revision
        new = signed(RSA_B, "b", sub="ben")
        assert refused(v, new) == "invalid token: unknown key"
        await eventually(lambda: source.revision > revision)
        assert v.verify(new).sub == "ben"
        assert v.verify(signed(EC_E, "e", "ES256")).sub == "alice"
        assert refused(v, old) == "invalid token: unknown key"
        assert source.running
    assert not source.running


async def test_the_file_is_read_again_on_schedule(tmp_path: Path) -> None:
    """Without any token asking, the file is reloaded every refresh_s when it changed."""
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(RSA_A, "a"))
    keys = JwtKeys.from_settings(Settings(jwt_jwks_file=str(path), jwt_jwks_refresh_s=0.05))
    assert keys.jwks is not None
    source = keys.jwks
    async with started(JwtVerifier(keys, audience=None, issuer=None)):
        revision = source.revision
        await asyncio.sleep(0.2)
        assert source.revision == revision  # unchanged file: nothing new
        write_jwks(path, jwk(RSA_A, "a"), jwk(RSA_B, "b"))
        await eventually(lambda: source.kids == ("a", "b"))


# --- JWKS URL ----------------------------------------------------------------------------------


async def test_jwks_url_refresh_picks_up_a_new_key() -> None:
    """A JWKS served over HTTP is fetched at start and again every refresh_s: a key added
    there is used without a restart, and an ETag lets an unchanged set cost a 304."""
    async with JwksServer(jwks_bytes(jwk(RSA_A, "a"))) as server:
        keys = JwtKeys.from_settings(Settings(jwt_jwks_url=server.url, jwt_jwks_refresh_s=0.05))
        assert keys.jwks is not None and not keys.jwks.loaded
        assert not server.requests  # nothing fetched before start, and not on the loop
        v = JwtVerifier(keys, audience=None, issuer=None)
        async with started(v):
            assert v.verify(signed(RSA_A, "a")).sub == "alice"
            server.body = jwks_bytes(jwk(RSA_A, "a"), jwk(EC_E, "e"))
            await eventually(lambda: keys.jwks is not None and "e" in keys.jwks.kids)
            assert v.verify(signed(EC_E, "e", "ES256")).sub == "alice"
            server.etag = '"v2"'
            assert await keys.jwks.refresh()  is False  # same bytes: no change
            assert await keys.jwks.refresh() is False  # now conditional: 304
            assert b'if-none-match: "v2"' in server.requests[-1].lower()
            assert v.verify(signed(RSA_A, "a")).sub == "alice"


async def test_unknown_kids_fail_fast_and_refresh_at_most_once_per_interval() -> None:
    """Tokens with unknown kids are refused at once, even while the JWKS server is slow, and
    cause one early fetch per interval, not one each."""
    async with JwksServer(jwks_bytes(jwk(RSA_A, "a"))) as server:
        source = JwksKeySource(url=server.url, algorithms=JWKS_ALGS, refresh_s=300,
                               early_refresh_min_s=30.0)
        async with started(jwks_verifier(source)) as v:
            assert len(server.requests) == 1
            for i in range(20):
                assert refused(v, signed(RSA_B, f"new-{i}")) == "invalid token: unknown key"
                await asyncio.sleep(0.02)  # room for the task to fetch between tokens
            assert len(server.requests) == 2
            assert v.verify(signed(RSA_A, "a")).sub == "alice"
        eager = JwksKeySource(url=server.url, algorithms=JWKS_ALGS, refresh_s=300,
                              early_refresh_min_s=0.0)
        async with started(jwks_verifier(eager)) as v:
            server.delay_s = 3.0
            tokens = [signed(RSA_B, f"new-{i}") for i in range(50)]
            t0 = time.monotonic()
            for token in tokens:
                assert refused(v, token) == "invalid token: unknown key"
                await asyncio.sleep(0)
            assert time.monotonic() - t0 < 1.0
            await eventually(lambda: len(server.requests) == 4)  # asked, and still waiting
            assert v.verify(signed(RSA_A, "a")).sub == "alice"


async def test_a_slow_url_answer_times_out_and_the_old_keys_stay() -> None:
    """A JWKS server that answers late, or drips its answer, is given up after the fetch
    timeout, and the keys in use stay."""
    async with JwksServer(jwks_bytes(jwk(RSA_A, "a"))) as server:
        source = JwksKeySource(url=server.url, algorithms=JWKS_ALGS, refresh_s=300,
                               fetch_timeout_s=0.3)
        async with started(jwks_verifier(source)) as v:
            server.body = jwks_bytes(jwk(RSA_B, "b"))
            for mode, delay in (("ok", 5.0), ("drip", 0.0)):
                server.mode, server.delay_s = mode, delay
                t0 = time.monotonic()
                with pytest.raises(JwksError, match=r"no complete answer within 0\.3 s"):
                    await source.refresh()
                assert time.monotonic() - t0 < 1.5
                assert source.kids == ("a",)
                assert v.verify(signed(RSA_A, "a")).sub == "alice"


@pytest.mark.parametrize("mode", ["huge", "huge_declared"])
async def test_a_huge_url_answer_is_refused_and_the_old_keys_stay(mode: str) -> None:
    """A JWKS answer over 1 MiB, with or without Content-Length, is refused, and the keys in
    use stay."""
    async with JwksServer(jwks_bytes(jwk(RSA_A, "a"))) as server:
        source = JwksKeySource(url=server.url, algorithms=JWKS_ALGS, refresh_s=300)
        async with started(jwks_verifier(source)) as v:
            server.mode = mode
            with pytest.raises(JwksError, match="larger than 1048576 bytes"):
                await source.refresh()
            assert source.kids == ("a",)
            assert v.verify(signed(RSA_A, "a")).sub == "alice"


async def test_the_refresh_task_survives_any_error(caplog: pytest.LogCaptureFixture) -> None:
    """HTTP errors, a body that is not a JWKS, and an unexpected exception are logged, the
    keys in use stay, and the task goes on to load the next good document."""
    async with JwksServer(jwks_bytes(jwk(RSA_A, "a"))) as server:
        source = JwksKeySource(url=server.url, algorithms=JWKS_ALGS, refresh_s=0.05)
        real_parse = source._parse
        calls = {"n": 0}

        def flaky_parse(raw: bytes) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("a bug")
            return real_parse(raw)

        source._parse = flaky_parse  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING):
            async with started(jwks_verifier(source)) as v:
                server.body = b"not json"  # parsed second: RuntimeError instead
                await eventually(lambda: "RuntimeError" in caplog.text)
                await eventually(lambda: "is not JSON" in caplog.text)
                server.status, server.body = 500, b"{}"
                await eventually(lambda: "HTTP 500" in caplog.text)
                server.status, server.body = 200, b'{"keys": []}'
                await eventually(lambda: "no key usable" in caplog.text)
                assert v.verify(signed(RSA_A, "a")).sub == "alice"
                server.body = jwks_bytes(jwk(RSA_B, "b"))
                await eventually(lambda: source.kids == ("b",))
                assert v.verify(signed(RSA_B, "b")).sub == "alice"
                assert source.running


async def test_a_url_that_is_down_at_start_is_retried_in_the_background() -> None:
    """start() does not fail when the JWKS URL is down: tokens are refused as unknown key
    until a fetch succeeds."""
    async with JwksServer(jwks_bytes(jwk(RSA_A, "a"))) as server:
        server.status = 503
        source = JwksKeySource(url=server.url, algorithms=JWKS_ALGS, refresh_s=0.05)
        async with started(jwks_verifier(source)) as v:
            assert not source.loaded
            assert refused(v, signed(RSA_A, "a")) == "invalid token: unknown key"
            server.status = 200
            await eventually(lambda: source.loaded)
            assert v.verify(signed(RSA_A, "a")).sub == "alice"


async def test_start_and_close_are_counted_and_stop_the_task(tmp_path: Path) -> None:
    """Verifiers sharing a source keep its task until the last one closes; a verifier
    without a JWKS starts and closes nothing."""
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(RSA_A, "a"))
    source = JwksKeySource(file=str(path), algorithms=JWKS_ALGS)
    source.load_now()
    one, two = jwks_verifier(source), jwks_verifier(source)
    await one.start()
    await two.start()
    await one.close()
    assert source.running
    await two.close()
    assert not source.running
    await two.close()  # once more: harmless
    plain = JwtVerifier(JwtKeys.from_settings(Settings(jwt_secret=SECRET)),
                        audience=None, issuer=None)
    await plain.start()
    await plain.close()


async def test_an_unknown_kid_is_a_401_over_http(tmp_path: Path) -> None:
    """Through the API: a JWKS token is let in, and one with an unknown kid gets 401 with
    the fixed reason in the challenge."""
    from reference.fakes.pipeline import running_pipeline

    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(RSA_A, "a"))
    settings = Settings(jwt_secret=SECRET, jwt_jwks_file=str(path), queue="key-rotation",
                        request_timeout_s=5.0, shutdown_timeout_s=1.0)
    async with running_pipeline(settings) as pipe:
        async with httpx.AsyncClient(base_url=pipe.base_url, timeout=10) as http:
            good = await http.get("/users", headers={
                "Authorization": f"Bearer {signed(RSA_A, 'a', roles=['admin'])}"})
            assert good.status_code != 401, good.text
            bad = await http.get("/users", headers={
                "Authorization": f"Bearer {signed(RSA_B, 'rotated-away')}"})
            assert bad.status_code == 401
            assert bad.json()["error"]["message"] == "invalid token: unknown key"
            assert 'error_description="invalid token: unknown key"' in (
                bad.headers["www-authenticate"])


# --- configuration ------------------------------------------------------------------------------


def _file(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "jwks.json"
    path.write_bytes(content)
    return str(path)


BAD_CONFIG: dict[str, tuple[Callable[[Path], dict[str, Any]], str]] = {
    "missing file": (lambda p: {"jwt_jwks_file": str(p / "nope.json")},
                     "cannot read JWKS file"),
    "not JSON": (lambda p: {"jwt_jwks_file": _file(p, b"\xff{")}, "is not JSON"),
    "a JWK, not a set": (lambda p: {"jwt_jwks_file": _file(p, json.dumps(jwk(RSA_A, "a"))
                                                           .encode())}, "not a JWK Set"),
    "too many keys": (lambda p: {"jwt_jwks_file": _file(p, jwks_bytes(*[{}] * 101))},
                      "101 keys, more than 100"),
    "too large": (lambda p: {"jwt_jwks_file": _file(p, b" " * (1024 * 1024 + 1))},
                  "larger than 1048576 bytes"),
    "no usable key": (lambda p: {"jwt_jwks_file": _file(p, jwks_bytes(
        {"kty": "oct", "k": "c2VjcmV0", "kid": "s"}))}, "no key usable with RS256, ES256"),
    "file and URL": (lambda p: {"jwt_jwks_file": "x", "jwt_jwks_url": "https://idp/jwks"},
                     "not both"),
    "public key and JWKS": (lambda p: {"jwt_public_key_file": "k.pem",
                                       "jwt_jwks_url": "https://idp/jwks"}, "not both"),
    "previous without current": (lambda p: {"jwt_previous_secrets": (OLD_SECRET,),
                                            "jwt_jwks_url": "https://idp/jwks"},
                                 "needs REFERENCE_JWT_SECRET"),
    "plain http": (lambda p: {"jwt_jwks_url": "http://idp.example/jwks"}, "must be https"),
    "HS without secret": (lambda p: {"jwt_jwks_url": "https://idp/jwks",
                                     "jwt_algorithms": ("HS256", "RS256")},
                          "HS\\* algorithms need REFERENCE_JWT_SECRET"),
    "secret without HS": (lambda p: {"jwt_secret": SECRET, "jwt_jwks_url": "https://idp/jwks",
                                     "jwt_algorithms": ("RS256",)}, "lists no HS"),
    "RS with a secret only": (lambda p: {"jwt_secret": SECRET, "jwt_algorithms": ("RS256",)},
                              "verifies only HS"),
    "alg none": (lambda p: {"jwt_secret": SECRET, "jwt_algorithms": ("none",)},
                 "'none' is not accepted"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIG))
def test_bad_configuration_is_one_line(tmp_path: Path, case: str) -> None:
    """Each configuration that cannot work is a ConfigError of one line that says why."""
    make, why = BAD_CONFIG[case]
    settings = Settings(broker_url="amqp://h/", store_url="redis://h/").replace(**make(tmp_path))
    with pytest.raises(ConfigError, match=why) as info:
        JwtKeys.from_settings(settings)
    assert "\n" not in str(info.value)
    assert "BEGIN" not in str(info.value)
