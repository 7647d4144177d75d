"""TLS to RabbitMQ (amqps://) and Redis (rediss://), against throwaway servers on loopback that
listen on TLS only and require a client certificate, with certificates made by the test.

RabbitMQ is a second node of its own (tests/system/tls/servers.py), not a TLS proxy in front
of the machine's node: it starts in about 5 s, once for this module, and it is RabbitMQ's own
TLS stack (Erlang's ssl) that verifies our client certificate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvloop

from reference.adapters.rabbitmq import RabbitMQBroker, rabbitmq_broker
from reference.adapters.redis_wiring import redis_stores
from reference.adapters.tls import TlsStartupError
from reference.bootstrap import build
from reference.errors import BrokerUnavailable, ConfigError
from reference.fakes.pipeline import running_pipeline
from reference.settings import Settings
from tests.system.tls.certs import Certs, make_certs
from tests.system.tls.servers import TlsServer, rabbitmq_tls, redis_tls

pytestmark = pytest.mark.real

SECRET = "tls-secret-" + "t" * 24


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[TlsServer]:
    with rabbitmq_tls(tmp_path_factory.mktemp("rabbitmq"), cert=certs.server_cert,
                      key=certs.server_key, ca=certs.ca) as server:
        yield server


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[TlsServer]:
    with redis_tls(tmp_path_factory.mktemp("redis"), cert=certs.server_cert,
                   key=certs.server_key, ca=certs.ca) as server:
        yield server


def amqps(server: TlsServer) -> str:
    return f"amqps://guest:guest@127.0.0.1:{server.port}/"


def rediss(server: TlsServer) -> str:
    return f"rediss://127.0.0.1:{server.port}/0"


def tls_settings(certs: Certs, rabbit: TlsServer, redis: TlsServer, unique: str,
                 **changes: object) -> Settings:
    """Settings on both TLS servers with the right CA and the client certificate; `changes`
    override any field (None included)."""
    settings = Settings(
        broker_url=amqps(rabbit), store_url=rediss(redis), queue=f"tls-{unique}",
        key_prefix=f"tls{unique}:", jwt_secret=SECRET, tls_ca_file=str(certs.ca),
        tls_cert_file=str(certs.client_cert), tls_key_file=str(certs.client_key),
        connect_timeout_s=5.0, request_timeout_s=10.0)
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def tls_env(broker_url: str, store_url: str, **tls_vars: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERENCE_")}
    env.update(REFERENCE_BROKER_URL=broker_url, REFERENCE_STORE_URL=store_url,
               REFERENCE_QUEUE="tls-cli", REFERENCE_CONNECT_TIMEOUT_S="30",
               **{f"REFERENCE_TLS_{k.upper()}_FILE": v for k, v in tls_vars.items()})
    return env


async def run_worker(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "reference", "worker"], env=env,
        capture_output=True, text=True, timeout=20)
    return done, time.monotonic() - started


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    return lines[0]


def on_uvloop(make: Callable[[], Coroutine[Any, Any, None]]) -> Awaitable[None]:
    """Run `make()` on uvloop in a thread, as `reference worker` and Sanic run it."""
    return asyncio.to_thread(uvloop.run, make())


async def test_a_request_goes_through_the_pipeline_over_tls(
        certs: Certs, rabbit: TlsServer, redis: TlsServer, unique: str) -> None:
    """API, worker, RabbitMQ and Redis (push completion, so pub/sub too) all over TLS with a
    client certificate: a user is created and read back."""
    settings = tls_settings(certs, rabbit, redis, unique, completion="push")
    async with running_pipeline(settings) as pipe:
        r = await pipe.client.post("/users", json={"name": "Ada", "email": "ada@example.com"},
                                   headers=pipe.auth("ada"))
        assert r.status_code == 201, r.text
        user = r.json()
        request_id = r.headers["X-Request-ID"]
        r = await pipe.client.get(f"/users/{user['id']}", headers=pipe.auth("ada"))
        assert r.status_code == 200 and r.json() == user
        record = await pipe.store.get(request_id)
        assert record is not None and record.status == "Success"


@pytest.mark.parametrize("client", ["none", "from another CA"])
async def test_the_servers_require_the_client_certificate(
        client: str, certs: Certs, rabbit: TlsServer, redis: TlsServer, unique: str) -> None:
    """Both servers accept the configured client certificate and refuse none or a stranger's,
    which at start-up is one TlsStartupError naming the server and the refusal."""
    good = tls_settings(certs, rabbit, redis, unique)
    if client == "none":
        bad = dataclasses.replace(good, tls_cert_file=None, tls_key_file=None)
        alert = "certificate_required"
    else:
        bad = dataclasses.replace(good, tls_cert_file=str(certs.wrong_client_cert),
                                  tls_key_file=str(certs.wrong_client_key))
        alert = "unknown_ca"
    refusals: list[str] = []

    async def attempt() -> None:
        for settings, must_pass in ((good, True), (bad, False)):
            broker = rabbitmq_broker(settings, None)
            results, _ = redis_stores(settings, None)
            for what, call, close in (("rabbitmq", broker.connect, broker.close),
                                      ("redis", results.ping, results.close)):
                try:
                    await call()
                    assert must_pass, f"{what} took a connection with client certificate {client}"
                except TlsStartupError as exc:
                    assert not must_pass, f"{what} refused the configured certificate: {exc}"
                    refusals.append(str(exc))
                finally:
                    await close()

    # On uvloop, as the processes run: there the server's alert always reaches us (on the
    # stdlib loop RabbitMQ's reset sometimes overtakes it; see the report in adapters.tls).
    await on_uvloop(attempt)
    assert [r.split(" refused ")[0] for r in refusals] == [
        f"TLS: rabbitmq at 127.0.0.1:{rabbit.port}", f"TLS: redis at 127.0.0.1:{redis.port}"]
    assert all(f"refused the client certificate ({alert};" in r for r in refusals), refusals


async def test_a_wrong_ca_is_one_line_at_start_up(
        certs: Certs, rabbit: TlsServer, redis: TlsServer) -> None:
    """`reference worker` with a CA that did not sign the broker's certificate exits 1 at once
    (not after the 30 s connect timeout) with one line naming the server and the CA file."""
    env = tls_env(amqps(rabbit), rediss(redis), ca=str(certs.wrong_ca),
                  cert=str(certs.client_cert), key=str(certs.client_key))
    done, took = await run_worker(env)
    assert done.returncode == 1, done.stderr
    assert one_line(done.stderr) == (
        f"reference: error: TLS: certificate verify failed for rabbitmq at "
        f"127.0.0.1:{rabbit.port}: self-signed certificate in certificate chain "
        f"(trusted: REFERENCE_TLS_CA_FILE={str(certs.wrong_ca)!r})")
    assert took < 10, f"took {took:.1f} s: it retried instead of failing at once"


async def test_without_a_ca_file_the_system_trust_store_is_used(
        certs: Certs, rabbit: TlsServer, redis: TlsServer, unique: str) -> None:
    """With no REFERENCE_TLS_CA_FILE the test's CA is not trusted (it is not in the system
    store), so both servers fail verification, and the line says which trust was used."""
    settings = tls_settings(certs, rabbit, redis, unique, tls_ca_file=None)
    broker = rabbitmq_broker(settings, None)
    results, _ = redis_stores(settings, None)
    for call, close in ((broker.connect, broker.close), (results.ping, results.close)):
        try:
            with pytest.raises(TlsStartupError) as raised:
                await call()
        finally:
            await close()
        assert str(raised.value).endswith(
            ": self-signed certificate in certificate chain (trusted: the system trust store "
            "(REFERENCE_TLS_CA_FILE is not set))"), raised.value


async def test_the_hostname_is_verified(certs: Certs, rabbit: TlsServer,
                                        tmp_path: Path) -> None:
    """A Redis whose certificate (from the right CA) is for another host: `reference worker`
    exits 1 at once with one line that says the address does not match."""
    with redis_tls(tmp_path / "misnamed", cert=certs.misnamed_server_cert,
                   key=certs.misnamed_server_key, ca=certs.ca) as misnamed:
        env = tls_env(amqps(rabbit), rediss(misnamed), ca=str(certs.ca),
                      cert=str(certs.client_cert), key=str(certs.client_key))
        done, took = await run_worker(env)
    assert done.returncode == 1, done.stderr
    assert one_line(done.stderr) == (
        f"reference: error: TLS: certificate verify failed for redis at "
        f"127.0.0.1:{misnamed.port}: IP address mismatch, certificate is not valid for "
        f"'127.0.0.1'. (trusted: REFERENCE_TLS_CA_FILE={str(certs.ca)!r})")
    assert took < 10, f"took {took:.1f} s: it retried instead of failing at once"


@pytest.mark.parametrize("case", ["missing cert file", "cert without key", "key without cert",
                                  "CA file not PEM", "key of another cert"])
async def test_unusable_tls_files_are_one_config_error_line(case: str, certs: Certs,
                                                            tmp_path: Path) -> None:
    """A TLS file that is missing, unreadable or wrong, or a certificate without its key, is
    exit 2 with one line that names the variable, before anything is contacted."""
    files = {"ca": str(certs.ca), "cert": str(certs.client_cert), "key": str(certs.client_key)}
    missing = str(tmp_path / "nowhere" / "client.pem")
    expected = {
        "missing cert file": f"REFERENCE_TLS_CERT_FILE={missing!r} cannot be read: "
                             f"No such file or directory",
        "cert without key": "REFERENCE_TLS_CERT_FILE is set but REFERENCE_TLS_KEY_FILE is not",
        "key without cert": "REFERENCE_TLS_KEY_FILE is set but REFERENCE_TLS_CERT_FILE is not",
        "CA file not PEM": f"REFERENCE_TLS_CA_FILE={str(certs.client_key)!r} holds no usable "
                           f"PEM certificate",
        "key of another cert": "are not a PEM certificate and its unencrypted private key: "
                               "KEY_VALUES_MISMATCH",
    }[case]
    if case == "missing cert file":
        files["cert"] = missing
    elif case == "cert without key":
        del files["key"]
    elif case == "key without cert":
        del files["cert"]
    elif case == "CA file not PEM":
        files["ca"] = str(certs.client_key)
    else:
        files["key"] = str(certs.wrong_client_key)
    # Port 9 (discard): nothing there must be contacted to find these.
    env = tls_env("amqps://guest:guest@127.0.0.1:9/", "rediss://127.0.0.1:9/0", **files)
    done, _ = await run_worker(env)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert line.startswith("reference: error: ") and expected in line, line


@pytest.mark.parametrize(("broker_url", "store_url", "option"), [
    ("amqps://h/?no_verify_ssl=1", "rediss://h/0", "no_verify_ssl"),
    ("amqps://h/?cafile=/etc/ca.pem", "rediss://h/0", "cafile"),
    ("amqps://h/", "rediss://h/0?ssl_cert_reqs=none", "ssl_cert_reqs"),
])
def test_tls_options_in_the_url_are_refused(broker_url: str, store_url: str,
                                            option: str) -> None:
    """The drivers' own TLS options in a URL (which could turn verification off) are a
    ConfigError: TLS is configured by REFERENCE_TLS_* only."""
    with pytest.raises(ConfigError, match=f"TLS options in the URL are not supported \\({option}"):
        build(Settings(broker_url=broker_url, store_url=store_url, jwt_secret=SECRET),
              require_key=False)


async def test_amqps_to_a_plain_port_is_one_clear_error(amqp_url: str) -> None:
    """amqps:// to the machine's plain-text AMQP port fails at start-up at once, saying that
    the port does not speak TLS."""
    plain = urlsplit(amqp_url)
    broker = RabbitMQBroker(plain._replace(scheme="amqps").geturl(),
                            ssl_context=ssl.create_default_context())
    try:
        with pytest.raises(TlsStartupError, match="does not speak TLS on that port"):
            await broker.connect()
    finally:
        await broker.close()
    with pytest.raises(BrokerUnavailable):  # closed: it does not retry in the background
        await broker.ping()
