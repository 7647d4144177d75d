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
BAD_RECORD: Final = "bad_record"  # the error code of a stored value that breaks this contract


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

    @classmethod
    def unreadable(cls, reason: str) -> ResultRecord:
        """What stands for a stored value that is no valid record: final (nobody waits on
        it), owned by nobody, and answered as 502 `bad_record`."""
        return cls(status=FAIL, detail=f"unreadable result record: {reason}",
                   error={"code": BAD_RECORD, "message": reason})

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
        _check_types(kwargs)
        kwargs["detail"] = str(data.get("detail", ""))
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_types(data: dict[str, Any]) -> None:
    """The optional fields of SPEC §3, each of its type or absent (null counts as absent)."""
    progress = data.get("progress")
    if progress is not None and (not _number(progress) or not 0 <= progress <= 100):
        raise MalformedRecord("progress must be a number from 0 to 100")
    error = data.get("error")
    if error is not None and (not isinstance(error, dict)
                              or not isinstance(error.get("code"), str)):
        raise MalformedRecord("error must be an object with a string code")
    owner = data.get("owner")
    if owner is not None and not isinstance(owner, str):
        raise MalformedRecord("owner must be a string")
    for name in ("queued_at", "started_at", "updated_at", "finished_at"):
        value = data.get(name)
        if value is not None and not _number(value):
            raise MalformedRecord(f"{name} must be a number (epoch ms)")
