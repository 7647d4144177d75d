"""`reference conformance core|api`: the parser and the dispatch (runners imported lazily)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

CORE_USAGE = "reference conformance core [options] -- CMD [ARGS...]"


def add_parser(sub: Any) -> None:
    """Add `conformance` to the subparsers of `reference`."""
    conformance = sub.add_parser(
        "conformance", help="check a core or an API, in any language, against the contract")
    which = conformance.add_subparsers(dest="conformance", required=True)

    core = which.add_parser(
        "core", usage=CORE_USAGE,
        help="start CMD as a core worker on real RabbitMQ and Redis and check it",
        description="Starts CMD with REFERENCE_BROKER_URL, REFERENCE_STORE_URL, "
        "REFERENCE_QUEUE, REFERENCE_KEY_PREFIX (fresh names), REFERENCE_CLAIM_TTL_S=2 and "
        "REFERENCE_DELIVERY_LIMIT=2, acts as the API, and checks the records it writes.")
    core.add_argument("--amqp-url", default=None,
                      help="RabbitMQ (default amqp://guest:guest@127.0.0.1:5672/)")
    core.add_argument("--redis-url", default=None,
                      help="Redis (default redis://127.0.0.1:6379/0)")
    core.add_argument("--junit-xml", metavar="FILE", help="also write a JUnit XML report")
    core.add_argument("--timeout", type=float, default=15.0, metavar="S",
                      help="bound of every wait for the core (default 15)")
    core.add_argument("--instances", type=int, default=2, metavar="N",
                      help="core processes to run at once (default 2)")
    core.add_argument("--domain-namespace", default=None, metavar="NS",
                      help="keys under <prefix>NS are the users' own data: no TTL needed "
                      "(default {reference:users}:)")
    core.add_argument("cmd", nargs=argparse.REMAINDER, help="the core's command line")

    api = which.add_parser("api", help="check a running API over HTTP")
    api.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    api.add_argument("--jwt-secret", required=True, help="the API's HS256 secret")
    api.add_argument("--jwt-audience", help="aud claim, if the API requires one")
    api.add_argument("--jwt-issuer", help="iss claim, if the API requires one")
    api.add_argument("--junit-xml", metavar="FILE", help="also write a JUnit XML report")
    api.add_argument("--timeout", type=float, default=15.0, metavar="S",
                     help="bound of every HTTP call and wait (default 15)")
    api.add_argument("--max-body-bytes", type=int, default=1024 * 1024, metavar="N",
                     help="the API's body limit (default 1 MiB); the 413 check sends more")


def run(args: argparse.Namespace) -> int:
    if args.conformance == "core":
        return _core(args)
    from reference.conformance.api import ApiOptions, run_api

    options = ApiOptions(url=args.url, jwt_secret=args.jwt_secret, audience=args.jwt_audience,
                         issuer=args.jwt_issuer, junit_xml=args.junit_xml,
                         timeout_s=args.timeout, max_body_bytes=args.max_body_bytes)
    return run_api(options)


def _usage_error(message: str) -> int:
    print(f"reference: error: {message}", file=sys.stderr)
    return 2


def _core(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        return _usage_error(f"conformance core needs the core's command: {CORE_USAGE}")
    if args.instances < 1:
        return _usage_error("--instances must be at least 1")
    if args.timeout <= 0:
        return _usage_error("--timeout must be positive")
    from reference.conformance import core

    options = core.CoreOptions(
        cmd=cmd,
        amqp_url=args.amqp_url or core.DEFAULT_AMQP_URL,
        redis_url=args.redis_url or core.DEFAULT_REDIS_URL,
        timeout_s=args.timeout,
        instances=args.instances,
        junit_xml=args.junit_xml,
        domain_namespace=(core.DOMAIN_NAMESPACE if args.domain_namespace is None
                          else args.domain_namespace),
    )
    return asyncio.run(core.run_core(options))
