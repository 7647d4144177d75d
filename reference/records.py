"""The result record of SPEC §3: what a request's status is, stored as JSON under its id."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Final

import orjson

QUEUED: Final = "Queued"
RUNNING: Final = "Running"
SUCCESS: Final = "Success"
FAIL: Final = "Fail"
STATUSES: Final = frozenset({QUEUED, RUNNING, SUCCESS, FAIL})
FINAL_STATUSES: Final = frozenset({SUCCESS, FAIL})


class MalformedRecord(ValueError):
    """Stored bytes that are not a result record."""


@dataclass(frozen=True, slots=True)
class ResultRecord:
    status: str
    detail: str
    progress: int | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    owner: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    updated_at: float | None = None
    finished_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def error_code(self) -> str | None:
        return None if self.error is None else str(self.error.get("code", "internal"))

    def evolve(self, **changes: Any) -> ResultRecord:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        # Fields written by another producer are kept, never silently dropped.
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes | str) -> ResultRecord:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedRecord(f"record is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise MalformedRecord("record is not a JSON object")
        status = data.get("status")
        if status not in STATUSES:
            raise MalformedRecord(f"record has no valid status: {status!r}")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["detail"] = str(data.get("detail", ""))
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)
