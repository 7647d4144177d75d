"""The request message of SPEC §2 and its JSON encoding."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from reference.errors import PoisonMessage

# A request id is a store key: no ':' (the separator of the other key families: final:,
# claim:, starts:, reference:users:) and nothing that is not plain ASCII. The API issues UUIDs.
REQUEST_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    roles: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"sub": self.sub, "roles": list(self.roles)}


@dataclass(frozen=True, slots=True)
class RequestMessage:
    action: str
    params: dict[str, Any]
    request_id: str
    version: int = 1
    principal: Principal | None = None
    deadline: int | None = None  # epoch ms after which the work must not start
    queued_at: float | None = None  # our extension: when the API queued it (epoch ms)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "params": self.params,
            "request_id": self.request_id,
        }
        if self.version != 1:
            out["version"] = self.version
        if self.principal is not None:
            out["principal"] = self.principal.to_dict()
        if self.deadline is not None:
            out["deadline"] = self.deadline
        if self.queued_at is not None:
            out["queued_at"] = self.queued_at
        return out


def encode(message: RequestMessage) -> bytes:
    return orjson.dumps(message.to_dict())


def decode(body: bytes) -> RequestMessage:
    """Parse a message body; anything that can never be processed raises PoisonMessage."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PoisonMessage("body is not a JSON object")
    raw_id = data.get("request_id")
    request_id = raw_id if isinstance(raw_id, str) and REQUEST_ID.fullmatch(raw_id) else None

    def poison(reason: str) -> PoisonMessage:
        return PoisonMessage(reason, request_id=request_id)

    if request_id is None:
        raise poison("request_id must be 1 to 128 letters, digits, '-', '_' or '.'")
    action = data.get("action")
    if not isinstance(action, str) or not action:
        raise poison("action must be a non-empty string")
    params = data.get("params")
    if not isinstance(params, dict):
        raise poison("params must be an object")
    version = data.get("version", 1)
    if type(version) is not int:
        raise poison("version must be an integer")
    deadline = data.get("deadline")
    if deadline is not None and type(deadline) is not int:
        raise poison("deadline must be an integer (epoch ms)")
    queued_at = data.get("queued_at")
    if queued_at is not None and (not isinstance(queued_at, int | float)
                                  or isinstance(queued_at, bool)):
        raise poison("queued_at must be a number (epoch ms)")
    return RequestMessage(
        queued_at=queued_at,
        action=action,
        params=params,
        request_id=request_id,
        version=version,
        principal=_principal(data.get("principal"), poison),
        deadline=deadline,
    )


def _principal(raw: Any, poison: Any) -> Principal | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("sub"), str):
        raise poison("principal must be an object with a string sub")
    roles = raw.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise poison("principal.roles must be a list of strings")
    return Principal(sub=raw["sub"], roles=tuple(roles))
