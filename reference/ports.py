"""The ports of the core, declared once. Adapters and fakes satisfy them structurally."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from reference.domain import User
from reference.records import ResultRecord


class Delivery(Protocol):
    """One delivery of a message to a consumer; settled exactly once by ack or reject."""

    @property
    def body(self) -> bytes: ...

    @property
    def redelivered(self) -> bool: ...

    @property
    def delivery_count(self) -> int:
        """1 on the first delivery, 2 on the first redelivery, and so on."""
        ...

    @property
    def message_id(self) -> str | None: ...

    @property
    def reply_to(self) -> str | None:
        """Where the publisher wants a reply notice (`send_reply`), or None. A message
        published with `reply_to=DIRECT_REPLY_TO` arrives with the address the broker made of
        it for that publisher's channel (`amq.rabbitmq.reply-to.<opaque>`)."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """The message's string-valued AMQP headers, as published (empty when none)."""
        ...

    async def ack(self) -> None: ...

    async def reject(self, *, requeue: bool) -> None:
        """Hand the message back (requeue) or dead-letter it to `<queue>.dlq` (no requeue)."""
        ...


DeliveryHandler = Callable[[Delivery], Awaitable[None]]
ReplyHandler = Callable[[bytes], Awaitable[None]]

# RabbitMQ's Direct Reply-To pseudo-queue: a client consumes it (without acks) on the channel
# it publishes on, and publishes with this as `reply_to`; the broker rewrites it, per channel,
# into an address that anyone can publish a reply to through the default exchange.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


class Subscription(Protocol):
    """A running consumer; cancelling stops new deliveries but leaves unacked ones to settle."""

    async def cancel(self) -> None: ...


class MessageBroker(Protocol):
    """A RabbitMQ-like broker: durable FIFO queues with acks, requeue and dead-lettering."""

    async def connect(self) -> None: ...

    async def close(self) -> None:
        """Close the connection; unsettled deliveries go back to their queue as redelivered."""
        ...

    async def ping(self) -> None:
        """Raise BrokerUnavailable unless the broker answers."""
        ...

    async def declare_queue(self, queue: str) -> None:
        """Declare the durable queue and its dead-letter queue `<queue>.dlq`."""
        ...

    async def publish(self, queue: str, body: bytes, *, message_id: str,
                      reply_to: str | None = None,
                      headers: Mapping[str, str] | None = None) -> None:
        """Publish persistently and return once the broker has confirmed it. `headers` go
        out as AMQP headers (a W3C `traceparent`, say). `reply_to=DIRECT_REPLY_TO` needs this
        client's `consume_replies` running: without it RabbitMQ closes the channel
        (PRECONDITION_FAILED), and this raises BrokerUnavailable."""
        ...

    async def consume_replies(self, handler: ReplyHandler) -> Subscription:
        """Consume this client's Direct Reply-To pseudo-queue (no acks) on the channel that
        `publish` uses, calling `handler` with each reply's body, never inline. After a lost
        connection or channel it is consumed again, on the new publishing channel, before
        the next publish; replies sent to the old address in between are lost. One per
        client."""
        ...

    async def send_reply(self, address: str, body: bytes, *, correlation_id: str) -> None:
        """Publish a reply notice to `address` (a delivery's `reply_to`) on the default
        exchange: transient, not mandatory, no confirm awaited. A reply to an address whose
        consumer is gone is dropped by the broker, silently."""
        ...

    async def consume(
        self, queue: str, handler: DeliveryHandler, *, prefetch: int
    ) -> Subscription:
        """Deliver messages to `handler`, never more than `prefetch` unsettled at once."""
        ...

    async def get(self, queue: str) -> Delivery | None:
        """Take one message without a consumer (AMQP basic.get), or None if the queue is empty."""
        ...

    async def message_count(self, queue: str) -> int:
        """Messages ready in the queue (not counting unsettled deliveries)."""
        ...


class ResultStore(Protocol):
    """Result records keyed by request_id, plus the claims that keep work from running twice."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def create(self, request_id: str, record: ResultRecord, *, ttl_s: float) -> bool:
        """Write the first record of a new request id; False if the id is taken."""
        ...

    async def put(self, request_id: str, record: ResultRecord, *, ttl_s: float) -> bool:
        """Write the record with a TTL; False (and nothing written) once a final one is there.
        A final record is announced to subscribers."""
        ...

    async def get(self, request_id: str) -> ResultRecord | None: ...

    async def get_many(self, request_ids: Sequence[str]) -> list[ResultRecord | None]: ...

    async def begin(self, request_id: str, holder: str, running: ResultRecord, *,
                    claim_ttl_s: float, running_ttl_s: float, start_limit: int = 5,
                    starts_ttl_s: float = 3600.0) -> str:
        """Claim the request and write its Running record, in one step.

        Returns "started" (the claim is ours: ours before, or free), "held" (another holder
        has it; nothing written), "final" (the request is done; nothing written) or
        "exhausted" (it was claimed afresh `start_limit` times already and never finished:
        the delivery bound; nothing written)."""
        ...

    async def finish(self, request_id: str, holder: str, final: ResultRecord, *,
                     ttl_s: float) -> bool:
        """Write the final record unless there is one, release the claim, announce it."""
        ...

    async def renew_claim(self, request_id: str, holder: str, *, ttl_s: float) -> bool: ...

    async def release_claim(self, request_id: str, holder: str) -> None: ...

    async def subscribe_finals(self) -> FinalsSubscription:
        """Subscribe to final-record notices; subscribed when this returns."""
        ...

    async def subscribe_updates(self) -> FinalsSubscription:
        """Subscribe to the notices of every record write after Queued: each Running write
        (BEGIN's start, each PROGRESS) and each final record; subscribed when this returns."""
        ...


class UserRepository(Protocol):
    """The example domain's users: integer ids, unique emails."""

    async def create(self, name: str, email: str, *, request_id: str) -> User:
        """Create a user; a second call with the same request_id returns the same user."""
        ...

    async def get(self, user_id: int) -> User: ...

    async def list(self, *, limit: int, after: int | None) -> tuple[list[User], int | None]:
        """Users with ids above `after`, in id order, and the cursor of the next page."""
        ...

    async def update(self, user_id: int, *, name: str | None, email: str | None) -> User: ...

    async def delete(self, user_id: int) -> None: ...


class Watch(Protocol):
    """One request the API is waiting on; made before the message is published."""

    async def result(self, timeout_s: float) -> ResultRecord | None:
        """The final record, or the last record seen (or None) once `timeout_s` has passed."""
        ...

    def cancel(self) -> None: ...


class Completion(Protocol):
    """How the API learns that a request's record became final (`REFERENCE_COMPLETION`)."""

    @property
    def reply_to(self) -> str | None:
        """The `reply_to` the Requester puts on the messages it waits for (None: none)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def watch(self, request_id: str) -> Watch: ...


class FinalsSubscription(Protocol):
    """Notices of request ids whose record was just written: final records only (from
    `subscribe_finals`), or every write after Queued (from `subscribe_updates`)."""

    async def next(self, timeout_s: float) -> str | None:
        """The next request id, or None when nothing came within `timeout_s`."""
        ...

    async def close(self) -> None: ...
