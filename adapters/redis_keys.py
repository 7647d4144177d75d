"""The Redis key names of docs/contract.md §5, in one place, for every store and every core.

One naming serves a single Redis and a Redis Cluster alike:

- the record of a request is `<prefix><request_id>` (the product contract fixes it);
- its companions carry a hash tag equal to the record's key, so that all the keys of one
  request share the record's hash slot and one script can touch them together on a cluster:
  `<prefix>final:{<prefix><request_id>}`, `<prefix>claim:{<prefix><request_id>}`,
  `<prefix>starts:{<prefix><request_id>}`;
- the example domain's users live under `<prefix>{reference:users}:`: every users key in one
  slot, by design of the example (its scripts touch next_id, ids, an email key and a user hash
  together), so that domain is served by one shard however large the cluster;
- the notice channels are `<prefix>reference:finals` and `<prefix>reference:updates`.

A hash tag is the text between the first '{' and the first '}' after it, so neither the prefix
nor a request id may hold a brace: a prefix with one is refused here, and a request id is
1 to 128 of [A-Za-z0-9_.-] (reference/messages.py).
"""

from __future__ import annotations

from reference.settings import check_key_prefix

USERS_NAMESPACE = "{reference:users}:"
FINALS_CHANNEL = "reference:finals"
UPDATES_CHANNEL = "reference:updates"


def checked_prefix(prefix: str) -> str:
    """`prefix`, or ConfigError (one line) if it holds a '{' or '}' (Settings checks it too;
    this catches a prefix given to an adapter directly)."""
    return check_key_prefix(prefix)


class RequestKeys:
    """The names of one prefix's request keys and notice channels."""

    __slots__ = ("finals_channel", "prefix", "updates_channel")

    def __init__(self, prefix: str = "") -> None:
        self.prefix = checked_prefix(prefix)
        self.finals_channel = prefix + FINALS_CHANNEL
        self.updates_channel = prefix + UPDATES_CHANNEL

    def record(self, request_id: str) -> str:
        return self.prefix + request_id

    def final(self, request_id: str) -> str:
        """The finality marker, set with the final record."""
        return f"{self.prefix}final:{{{self.prefix}{request_id}}}"

    def claim(self, request_id: str) -> str:
        return f"{self.prefix}claim:{{{self.prefix}{request_id}}}"

    def starts(self, request_id: str) -> str:
        return f"{self.prefix}starts:{{{self.prefix}{request_id}}}"


def users_namespace(prefix: str = "") -> str:
    """Where the example domain's users live: `<prefix>{reference:users}:`."""
    return checked_prefix(prefix) + USERS_NAMESPACE
