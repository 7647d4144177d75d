"""A minimal hand-written pipeline, to measure the product against on the same machine.

What a developer would write in an afternoon: a Sanic route that verifies the JWT, publishes
with aiormq (publisher confirms, persistent) and polls Redis every 5 ms; a consumer that does
the users CRUD (and the demo job, `POST /jobs`) on Redis and writes the final record. No
ports, no validation, no claims, no Running/progress records, no dead-lettering. For the
load tests' time series it answers with `Server-Timing: total;dur=<ms>` (its own handling
time, as the product's `total`): one clock read and one header per request.

    python -m reference.loadtests.baseline api --port 8000 [--workers N]
    python -m reference.loadtests.baseline worker [--concurrency N]

Configuration from the same REFERENCE_* variables as the product.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
import uuid
from typing import Any

import aiormq
import jwt
import redis.asyncio as aioredis
from pamqp import commands as spec
from sanic import Request, Sanic
from sanic.response import HTTPResponse, empty
from sanic.response import json as json_response

BROKER_URL = os.environ.get("REFERENCE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
STORE_URL = os.environ.get("REFERENCE_STORE_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("REFERENCE_QUEUE", "baseline")
PREFIX = os.environ.get("REFERENCE_KEY_PREFIX", "")
SECRET = os.environ.get("REFERENCE_JWT_SECRET", "")
POLL_S = float(os.environ.get("REFERENCE_POLL_INTERVAL_MS", "5")) / 1000
TIMEOUT_S = float(os.environ.get("REFERENCE_REQUEST_TIMEOUT_S", "30"))


def create_app() -> Sanic:
    app: Sanic = Sanic("baseline")
    app.config.TOUCHUP = False

    @app.before_server_start
    async def connect(app: Sanic) -> None:
        app.ctx.redis = aioredis.from_url(STORE_URL, max_connections=256)
        app.ctx.amqp = await aiormq.connect(BROKER_URL)
        app.ctx.channel = await app.ctx.amqp.channel(publisher_confirms=True)
        await app.ctx.channel.queue_declare(QUEUE, durable=True)

    @app.after_server_stop
    async def disconnect(app: Sanic) -> None:
        await app.ctx.amqp.close()
        await app.ctx.redis.aclose()

    async def call(request: Request, action: str, params: dict[str, Any], ok: int) -> HTTPResponse:
        started = time.perf_counter()
        response = await answer(request, action, params, ok)
        took_ms = (time.perf_counter() - started) * 1000
        response.headers["Server-Timing"] = f"total;dur={took_ms:.3f}"
        return response

    async def answer(request: Request, action: str, params: dict[str, Any],
                     ok: int) -> HTTPResponse:
        header = request.headers.get("authorization", "")
        try:
            claims = jwt.decode(header.removeprefix("Bearer "), SECRET, algorithms=["HS256"])
        except jwt.InvalidTokenError:
            return json_response({"error": "unauthorized"}, 401)
        rid = str(uuid.uuid4())
        body = json.dumps({"action": action, "params": params, "request_id": rid,
                           "principal": {"sub": claims["sub"]}}).encode()
        await request.app.ctx.channel.basic_publish(
            body, routing_key=QUEUE,
            properties=spec.Basic.Properties(delivery_mode=2, message_id=rid))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT_S
        while loop.time() < deadline:
            raw = await request.app.ctx.redis.get(PREFIX + rid)
            if raw is not None:
                record = json.loads(raw)
                if record["status"] == "Success":
                    result = record.get("result")
                    return empty(204) if ok == 204 else json_response(result, ok)
                if record["status"] == "Fail":
                    return json_response(record, record.get("http", 500))
            await asyncio.sleep(POLL_S)
        return json_response({"request_id": rid}, 504)

    @app.post("/users")
    async def create(request: Request) -> HTTPResponse:
        return await call(request, "createUser", request.json, 201)

    @app.get("/users")
    async def list_users(request: Request) -> HTTPResponse:
        return await call(request, "listUsers", {"limit": int(request.args.get("limit", 20))}, 200)

    @app.get("/users/<uid:int>")
    async def get(request: Request, uid: int) -> HTTPResponse:
        return await call(request, "getUser", {"id": uid}, 200)

    @app.put("/users/<uid:int>")
    async def update(request: Request, uid: int) -> HTTPResponse:
        return await call(request, "updateUser", {**request.json, "id": uid}, 200)

    @app.delete("/users/<uid:int>")
    async def delete(request: Request, uid: int) -> HTTPResponse:
        return await call(request, "deleteUser", {"id": uid}, 204)

    @app.post("/jobs")
    async def job(request: Request) -> HTTPResponse:
        return await call(request, "runJob", request.json, 200)

    @app.get("/healthz")
    async def healthz(request: Request) -> HTTPResponse:
        return json_response({"status": "ok"})

    return app


# --- the consumer -------------------------------------------------------------------------


async def do_action(r: aioredis.Redis, action: str, p: dict[str, Any]) -> tuple[str, Any, int]:
    users = PREFIX + "baseline:users:"
    if action == "createUser":
        if not await r.set(users + "email:" + p["email"], 0, nx=True):
            return "Fail", None, 409
        uid = await r.incr(users + "next")
        await r.hset(users + str(uid), mapping={"name": p["name"], "email": p["email"]})
        await r.zadd(users + "ids", {str(uid): uid})
        return "Success", {"id": uid, "name": p["name"], "email": p["email"]}, 201
    uid = p.get("id")
    if action == "getUser":
        row = await r.hgetall(users + str(uid))
        if not row:
            return "Fail", None, 404
        return "Success", {"id": uid, **{k.decode(): v.decode() for k, v in row.items()}}, 200
    if action == "updateUser":
        if "name" in p:
            await r.hset(users + str(uid), "name", p["name"])
        row = await r.hgetall(users + str(uid))
        return "Success", {"id": uid, **{k.decode(): v.decode() for k, v in row.items()}}, 200
    if action == "deleteUser":
        email = await r.hget(users + str(uid), "email")
        await r.delete(users + str(uid), users + "email:" + (email or b"").decode())
        await r.zrem(users + "ids", str(uid))
        return "Success", None, 204
    if action == "runJob":
        if p.get("duration_ms"):
            await asyncio.sleep(p["duration_ms"] / 1000)
        return "Success", {"duration_ms": p["duration_ms"], "steps": p.get("steps", 1)}, 200
    if action == "listUsers":
        ids = await r.zrange(users + "ids", 0, p["limit"] - 1)
        return "Success", {"items": [{"id": int(i)} for i in ids], "next_cursor": None}, 200
    return "Fail", None, 400


async def worker(concurrency: int) -> None:
    r = aioredis.from_url(STORE_URL, max_connections=concurrency * 2)
    conn = await aiormq.connect(BROKER_URL)
    channel = await conn.channel()
    await channel.queue_declare(QUEUE, durable=True)
    await channel.basic_qos(prefetch_count=concurrency)

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        msg = json.loads(message.body)
        status, result, http = await do_action(r, msg["action"], msg["params"])
        await r.set(PREFIX + msg["request_id"],
                    json.dumps({"status": status, "detail": "", "result": result, "http": http}),
                    ex=3600)
        await message.channel.basic_ack(message.delivery_tag)

    await channel.basic_consume(QUEUE, on_message)
    print("baseline worker consuming", QUEUE, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await conn.close()
    await r.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m reference.loadtests.baseline")
    parser.add_argument("role", choices=["api", "worker"])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if args.role == "worker":
        import uvloop

        uvloop.run(worker(args.concurrency))
        return
    from sanic.worker.loader import AppLoader

    loader = AppLoader(factory=create_app)
    app = loader.load()
    app.prepare(host="127.0.0.1", port=args.port, workers=args.workers, motd=False,
                access_log=False)
    Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
