"""The `reference` command: serve the API, run a core worker, or sign a token (SPEC §5)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from reference import __version__
from reference.actions import load_actions
from reference.auth import JwtKeys, sign_token
from reference.bootstrap import build, check_urls
from reference.errors import ConfigError, ReferenceServiceError, StartupError
from reference.policy import RolesPolicy
from reference.settings import COMPLETIONS, Settings
from reference.worker import CoreWorker
from reference.worker_metrics import MetricsServer

log = logging.getLogger("reference")

DEMO_SUB = "dev"
DEMO_TOKEN_TTL_S = 24 * 3600


def _say(line: str) -> None:
    print(f"reference: {line}", flush=True)


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker-url", help="amqp://, amqps:// or memory:// "
                        "(env REFERENCE_BROKER_URL)")
    parser.add_argument("--store-url", help="redis://, rediss://, unix:// or memory:// "
                        "(env REFERENCE_STORE_URL)")
    parser.add_argument("--queue", help="queue name (env REFERENCE_QUEUE)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reference", description=__doc__)
    parser.add_argument("--version", action="version", version=f"reference {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (with memory:// also a worker)")
    serve.add_argument("--host", help="bind address (env REFERENCE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env REFERENCE_PORT, default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="Sanic worker processes")
    serve.add_argument("--completion", choices=COMPLETIONS,
                       help=f"how the API waits for results: {', '.join(COMPLETIONS[:-1])} "
                            f"or {COMPLETIONS[-1]} "
                            "(env REFERENCE_COMPLETION, default poll)")
    _common_flags(serve)

    worker = sub.add_parser("worker", help="run a core worker")
    worker.add_argument("--concurrency", type=int,
                        help="requests run at once (env REFERENCE_CONCURRENCY, default 16)")
    worker.add_argument("--metrics-port", type=int, dest="worker_metrics_port",
                        help="serve GET /metrics on this port, at REFERENCE_HOST (default "
                             "127.0.0.1) (env REFERENCE_WORKER_METRICS_PORT; default: none)")
    _common_flags(worker)

    sim = sub.add_parser("simulate", help="run the seeded whole-pipeline simulation under "
                         "faults (in memory, virtual time)")
    sim.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    sim.add_argument("--start", type=int, default=0, help="first seed")
    sim.add_argument("--seed", type=int, help="run this one seed only (a replay)")
    sim.add_argument("--verbose", action="store_true", help="show the services' logs")

    token = sub.add_parser("token", help="print a signed JWT for the configured secret")
    token.add_argument("--sub", required=True, help="subject")
    token.add_argument("--roles", default="", help="comma-separated roles")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")

    from reference.conformance.cli import add_parser as add_conformance_parser

    add_conformance_parser(sub)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    changes = {k: getattr(args, k, None) for k in
               ("broker_url", "store_url", "queue", "host", "port", "completion", "concurrency",
                "worker_metrics_port")}
    return Settings.from_env().replace(**changes)


def _configure_logging() -> None:
    # Our own loggers only: Sanic configures its own, and both on root would print twice.
    level = os.environ.get("REFERENCE_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("reference", "adapters", "fakes"):
        logger = logging.getLogger(name)
        logger.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
        logger.addHandler(handler)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging()
    if args.command == "simulate":
        return simulate(args)
    if args.command == "conformance":
        from reference.conformance.cli import run as run_conformance

        return run_conformance(args)
    try:
        settings = _settings(args)
        if args.command == "serve":
            return serve(settings, workers=args.workers)
        if args.command == "worker":
            return run_worker(settings)
        return token(settings, args)
    except ConfigError as exc:
        print(f"reference: error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"reference: error: {exc}", file=sys.stderr)
        return 1
    except ReferenceServiceError as exc:
        print(f"reference: error: {exc}", file=sys.stderr)
        return 1


# --- serve ------------------------------------------------------------------------------------


def serve(settings: Settings, *, workers: int) -> int:
    check_urls(settings)
    if settings.uses_memory and not settings.all_memory:
        raise ConfigError("memory:// must be used for both broker and store, or for neither")
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if settings.all_memory and workers > 1:
        raise ConfigError("memory:// lives in one process: use --workers 1, or real brokers")
    keys = JwtKeys.from_settings(settings)
    _check_listen(settings.host, settings.port)
    if not settings.all_memory:
        # Reach broker and store (and check the queue) here, in the main process, so that
        # a failure is one line and not a traceback from inside a Sanic worker.
        asyncio.run(_preflight(settings))
    if keys.ephemeral:
        # The made-up key must be the one the served app uses: pin it in the settings.
        settings = settings.replace(jwt_secret=keys.signing_key)
    _announce(settings, keys)

    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from reference.api import create_app
    from reference.api.protocol import BoundedHttpProtocol

    factory = functools.partial(create_app, settings, embedded_worker=settings.all_memory,
                                name="reference")
    loader = AppLoader(factory=factory)
    app = loader.load()
    app.prepare(host=settings.host, port=settings.port, workers=workers,
                single_process=settings.all_memory, motd=False, access_log=False,
                protocol=BoundedHttpProtocol)
    if settings.all_memory:
        Sanic.serve_single(primary=app)
        return 0
    with _multiprocess_metrics(workers):
        Sanic.serve(primary=app, app_loader=loader)
    return 0


@contextlib.contextmanager
def _multiprocess_metrics(workers: int) -> Iterator[None]:
    """With more than one Sanic worker, a fresh PROMETHEUS_MULTIPROC_DIR for this run, set
    before the workers start (each one picks its mode when it imports prometheus_client) and
    removed when serving ends: /metrics then adds up the values of every worker process."""
    if workers < 2:
        yield
        return
    from reference.api.metrics import MULTIPROC_ENV

    directory = tempfile.mkdtemp(prefix="reference-metrics-")
    before = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = before
        shutil.rmtree(directory, ignore_errors=True)


def _check_listen(host: str, port: int) -> None:
    """Fail in one line when the address cannot be listened on (in use, not ours, bad)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is not a TCP port (0 to 65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def _preflight(settings: Settings) -> None:
    services = build(settings, require_key=False)
    try:
        await services.start()
    finally:
        await services.close()


def _announce(settings: Settings, keys: JwtKeys) -> None:
    base = f"http://{settings.host}:{settings.port}"
    mode = ("in-memory broker and store, worker in this process" if settings.all_memory
            else f"broker {_redact(settings.broker_url)}, store {_redact(settings.store_url)}; "
                 "run workers apart")
    _say(f"serving on {base} ({mode})")
    if keys.signing_key is None:
        _say("only a public key is configured: it verifies tokens but cannot sign one")
        return
    # Every role the policy names, so that the printed token can try every route.
    roles = tuple(sorted(RolesPolicy.load(settings.roles_policy,
                                          load_actions(settings.actions)).all_roles))
    demo = sign_token(keys, sub=DEMO_SUB, ttl_s=DEMO_TOKEN_TTL_S, roles=roles,
                      audience=settings.jwt_audience, issuer=settings.jwt_issuer)
    note = " (made-up key: valid while this process runs)" if keys.ephemeral else ""
    _say(f"token for sub={DEMO_SUB}, roles={','.join(roles) or '(none)'}, valid 24 h{note}:")
    print(demo, flush=True)
    _say("try:")
    print(f"curl -i -X POST {base}/users -H 'Authorization: Bearer {demo}' "
          f"-H 'Content-Type: application/json' "
          f"-d '{{\"name\": \"Hong Gildong\", \"email\": \"hong@example.com\"}}'", flush=True)


def _redact(url: str) -> str:
    """A URL as it may be printed: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")  # hosts may be several: h1:1,h2:2
    netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    return urlunsplit(parts._replace(netloc=netloc))


# --- worker -----------------------------------------------------------------------------------


def run_worker(settings: Settings) -> int:
    check_urls(settings)
    if settings.uses_memory:
        raise ConfigError("a worker of its own needs real broker and store URLs; with memory:// "
                          "the worker runs inside `reference serve`")
    port = settings.worker_metrics_port
    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"--metrics-port {port} is not a TCP port (0 to 65535)")
    try:
        import uvloop

        uvloop.run(_worker_main(settings))
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(_worker_main(settings))
    return 0


async def _worker_main(settings: Settings) -> None:
    services = build(settings, require_key=False)
    try:
        await services.start()
    except BaseException:
        await services.close()
        raise
    worker = services.worker()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics_server = None
    try:
        if settings.worker_metrics_port is not None:
            metrics_server = await _start_metrics_server(worker, settings)
        await worker.start()
        _say(f"worker {worker.worker_id} consuming {settings.queue} "
             f"(concurrency {settings.concurrency})")
        await stop.wait()
        _say("stopping: finishing in-flight work")
    finally:
        with contextlib.suppress(Exception):
            await worker.stop()
        if metrics_server is not None:
            await metrics_server.close()
        await services.close()
    _say(f"worker stopped after {worker.processed} requests")


async def _start_metrics_server(worker: CoreWorker, settings: Settings) -> MetricsServer:
    port = settings.worker_metrics_port
    assert port is not None
    server = MetricsServer(worker.metrics, settings.host, port)
    try:
        await server.start()
    except OSError as exc:
        raise StartupError(f"cannot serve worker metrics on {settings.host}:{port}: "
                           f"{exc.strerror or exc}") from None
    _say(f"worker metrics on http://{settings.host}:{server.port}/metrics")
    return server


# --- simulate ---------------------------------------------------------------------------------


def simulate(args: argparse.Namespace) -> int:
    # The simulation lives with the fakes; imported by path, so that the core imports no fake.
    sim = importlib.import_module("reference.fakes.simulation")
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    if args.seed is None and args.seeds < 1:
        print("reference: error: --seeds must be at least 1", file=sys.stderr)
        return 2
    started = time.monotonic()
    violations = 0
    for seed in seeds:
        result = sim.run_seed(seed, verbose=args.verbose)
        found = result.violations
        violations += len(found)
        if args.seed is not None:  # a replay: everything it found, and what it did
            for violation in found:
                print(f"seed {seed}: {violation}", flush=True)
            for name, count in sorted(result.stats.items()):
                print(f"  {name}: {count}")
        elif found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            print(f"seed {seed}: {found[0]}{more}; replay: {sim.replay_command(seed)}",
                  flush=True)
    print(f"{len(seeds)} seeds, {violations} violations "
          f"({time.monotonic() - started:.1f} s)", flush=True)
    return 1 if violations else 0


# --- token ------------------------------------------------------------------------------------


def token(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.jwt_secret and not settings.jwt_public_key_file:
        raise ConfigError("no JWT secret configured: set REFERENCE_JWT_SECRET "
                          "(`reference serve` on memory:// prints a token for its own key)")
    if not args.sub.strip():
        raise ConfigError("--sub must not be empty")
    if args.ttl < 1:
        raise ConfigError("--ttl must be at least 1 second")
    keys = JwtKeys.from_settings(settings)
    roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
    print(sign_token(keys, sub=args.sub, roles=roles, ttl_s=args.ttl,
                     audience=settings.jwt_audience, issuer=settings.jwt_issuer))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
