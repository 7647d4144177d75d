"""The result record of contract §4: what a request's status is, stored as JSON under its id."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Annotated, Any, ClassVar, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

QUEUED: Final = "Queued"
RUNNING: Final = "Running"
SUCCESS: Final = "Success"
FAIL: Final = "Fail"
STATUSES: Final = frozenset({QUEUED, RUNNING, SUCCESS, FAIL})
FINAL_STATUSES: Final = frozenset({SUCCESS, FAIL})
BAD_RECORD: Final = "bad_record"  # the error code of a stored value that breaks this contract


class MalformedRecord(ValueError):
    """Stored bytes that are not a result record."""


EpochMs = Annotated[int | float, Field(description="epoch milliseconds")]


class ErrorModel(BaseModel):
    model_config: ClassVar[ConfigDict] = ConfigDict(strict=True, extra="allow")
    code: str = Field(description="validation, not_found, conflict, forbidden, "
                                  "unknown_action, deadline_exceeded, job_failed or internal")
    message: str = ""
    field: str | None = None


class RecordModel(BaseModel):
    """The result record as the API reads it (what another core must write). Fields it does
    not know are kept."""

    model_config: ClassVar[ConfigDict] = ConfigDict(strict=True, extra="allow",
                                                    title="ResultRecord")
    status: Literal["Queued", "Running", "Success", "Fail"]
    detail: str | None = Field("", description="human-readable; null counts as empty")
    progress: (Annotated[int, Field(ge=0, le=100)] | Annotated[float, Field(ge=0, le=100)]
               | None) = None
    result: Any = None
    error: ErrorModel | None = Field(None, description="on Fail")
    owner: str | None = Field(None, description="the sub of the JWT that made the request")
    queued_at: EpochMs | None = None
    started_at: EpochMs | None = None
    updated_at: EpochMs | None = None
    finished_at: EpochMs | None = None


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
        # As dataclasses.replace, at half its cost (it is on every worker's path twice).
        values = {name: getattr(self, name) for name in _INIT_FIELDS}
        values.update(changes)
        return ResultRecord(**values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _FIELD_ORDER:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
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
        try:
            model = RecordModel.model_validate(data)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in err["loc"]) or "record"
            raise MalformedRecord(f"{where}: {err['msg']}") from None
        known = _KNOWN
        kwargs = {k: getattr(model, k) for k in known}
        kwargs["detail"] = model.detail or ""
        if model.error is not None:
            kwargs["error"] = data["error"]  # as written, with any extra fields
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)


_KNOWN: Final = frozenset(f.name for f in fields(ResultRecord)) - {"extra"}
_FIELD_ORDER: Final = tuple(f.name for f in fields(ResultRecord) if f.name != "extra")
_INIT_FIELDS: Final = (*_FIELD_ORDER, "extra")
