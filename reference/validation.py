"""Small, strict readers for action parameters; each failure names its field."""

from __future__ import annotations

from typing import Any

from reference.errors import ValidationFailed

_MISSING = object()


def check_known(params: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValidationFailed(f"unknown field: {unknown[0]}", field=unknown[0])


def read_int(
    params: dict[str, Any],
    name: str,
    *,
    low: int,
    high: int,
    default: Any = _MISSING,
) -> int:
    value = params.get(name, _MISSING)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise ValidationFailed(f"{name} is required", field=name)
        return int(default)
    if type(value) is not int:
        raise ValidationFailed(f"{name} must be an integer", field=name)
    if not low <= value <= high:
        raise ValidationFailed(f"{name} must be between {low} and {high}", field=name)
    return value


def read_bool(params: dict[str, Any], name: str, *, default: bool) -> bool:
    value = params.get(name, default)
    if type(value) is not bool:
        raise ValidationFailed(f"{name} must be a boolean", field=name)
    return value


def read_str(
    params: dict[str, Any], name: str, *, max_len: int, required: bool = True
) -> str | None:
    value = params.get(name, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise ValidationFailed(f"{name} is required", field=name)
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"{name} must be a string", field=name)
    value = value.strip()
    if not value:
        raise ValidationFailed(f"{name} must not be empty", field=name)
    if len(value) > max_len:
        raise ValidationFailed(f"{name} must be at most {max_len} characters", field=name)
    return value


def read_email(params: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = read_str(params, name, max_len=254, required=required)
    if value is None:
        return None
    local, at, domain = value.partition("@")
    if not at or not local or "." not in domain or " " in value or domain.startswith("."):
        raise ValidationFailed(f"{name} must be an email address", field=name)
    return value.lower()
