"""Error codes (contract §4) to HTTP statuses, and the JSON shape of every error response."""

from __future__ import annotations

from typing import Any

STATUS_BY_CODE: dict[str, int] = {
    "validation": 422,
    "not_found": 404,
    "conflict": 409,
    "forbidden": 403,
    "unknown_action": 400,
    "deadline_exceeded": 504,
    "internal": 500,
    "job_failed": 422,
    "unavailable": 503,
    "bad_record": 502,
}


def status_for(code: str | None) -> int:
    return STATUS_BY_CODE.get(code or "internal", 502)


def error_body(
    code: str, message: str, *, field: str | None = None, **extra: Any
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {**extra, "error": error}
