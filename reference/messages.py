"""The request message of docs/contract.md §2 and its JSON encoding."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reference.errors import PoisonMessage

# A request id is a store key (adapters/redis_keys.py): no ':' (the separator of the other key
# families: final:{..}, claim:{..}, starts:{..}, {reference:users}:), no '{' or '}' (a Redis
# Cluster hash tag: the companions' tag is the record's key) and nothing that is not plain
# ASCII. The API issues UUIDs.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
REQUEST_ID = re.compile(REQUEST_ID_PATTERN[1:-1])
RequestId = Annotated[str, Field(pattern=REQUEST_ID_PATTERN,
                                 description="1 to 128 letters, digits, '-', '_' or '.'")]
EpochMs = Annotated[int | float, Field(description="epoch milliseconds")]


class PrincipalModel(BaseModel):
    """Who made the request, from the verified JWT."""

    model_config: ClassVar[ConfigDict] = ConfigDict(strict=True, extra="allow")
    sub: str
    roles: list[str] = []


class MessageModel(BaseModel):
    """The request message (the body of one AMQP message), as the worker validates it.
    Fields it does not know are ignored."""

    model_config: ClassVar[ConfigDict] = ConfigDict(strict=True, extra="allow",
                                                    title="RequestMessage")
    action: Annotated[str, Field(min_length=1)]
    params: dict[str, Any]
    request_id: RequestId
    version: int | None = Field(1, description="absent = 1; a worker refuses a version it does not "
                                        "know with Fail validation (field version)")
    principal: PrincipalModel | None = None
    deadline: int | None = Field(None, description="epoch ms after which the work must not "
                                                   "start (Fail deadline_exceeded)")
    queued_at: EpochMs | None = Field(None, description="when the API queued it (epoch ms)")


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
    try:
        model = MessageModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in err["loc"]) or "message"
        raise PoisonMessage(f"{where}: {err['msg']}", request_id=request_id) from None
    principal = model.principal
    return RequestMessage(
        action=model.action,
        params=model.params,
        request_id=model.request_id,
        version=1 if model.version is None else model.version,
        principal=None if principal is None else Principal(principal.sub,
                                                           tuple(principal.roles)),
        deadline=model.deadline,
        queued_at=model.queued_at,
    )
