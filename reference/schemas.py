"""Declared schemas: the base models an action's params and result are written in.

One pydantic model per action side validates on both sides of the queue (the API before it
publishes, the worker again when the message arrives), is what `/openapi.json` shows, and is
what the JSON Schema files in `docs/schemas/` are generated from.

Validation follows JSON's types, strictly: an integer field takes a JSON integer (not `1.0`,
not `"1"`, not `true`), a string field a JSON string. `null` for a field that has a default
counts as absent. A failure becomes `ValidationFailed` naming the first field at fault, with a
message in the service's own words ("limit must be between 1 and 100").
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from reference.errors import ValidationFailed


class FieldProblem(ValueError):
    """Raise from a validator to name the field at fault: `FieldProblem("name", "give ...")`.
    A plain ValueError from a field validator names its own field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Params(BaseModel):
    """Base of an action's params: strict JSON types, unknown fields refused, null = absent."""

    model_config: ClassVar[ConfigDict] = ConfigDict(strict=True, extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: v for k, v in data.items()
                if v is not None or k not in fields or fields[k].is_required()}


class Result(BaseModel):
    """Base of an action's result: strict JSON types; fields it does not declare are kept
    (a core in another language may add some)."""

    model_config: ClassVar[ConfigDict] = ConfigDict(strict=True, extra="allow", frozen=True)


def parse(model: type[BaseModel], data: Any) -> BaseModel:
    """Validate plain JSON data (as it came off the wire) against `model`."""
    try:
        raw = orjson.dumps(data)
    except TypeError:  # an integer past 64 bits: the standard library writes it
        raw = json.dumps(data).encode()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _failure(model, exc) from None


def dump(value: Any) -> Any:
    """A model as plain JSON data; anything else as it is."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def _bounds(model: type[BaseModel], name: str) -> tuple[Any, Any]:
    low = high = None
    info = model.model_fields.get(name)
    for meta in info.metadata if info is not None else ():
        low = getattr(meta, "ge", low)
        high = getattr(meta, "le", high)
    return low, high


def _failure(model: type[BaseModel], exc: ValidationError) -> ValidationFailed:
    err = exc.errors(include_url=False)[0]
    loc = err.get("loc", ())
    field = ".".join(str(part) for part in loc) or "params"
    kind = err["type"]
    ctx = err.get("ctx") or {}
    problem = ctx.get("error")
    if isinstance(problem, FieldProblem):
        return ValidationFailed(str(problem), field=problem.field)
    if kind == "value_error" and problem is not None:
        return ValidationFailed(f"{field} {problem}", field=field)
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        low, high = _bounds(model, str(loc[0])) if len(loc) == 1 else (None, None)
        if low is not None and high is not None:
            return ValidationFailed(f"{field} must be between {low} and {high}", field=field)
    messages = {
        "missing": "is required",
        "extra_forbidden": None,
        "int_type": "must be an integer",
        "bool_type": "must be a boolean",
        "string_type": "must be a string",
        "float_type": "must be a number",
        "string_too_short": ("must not be empty" if ctx.get("min_length") == 1
                             else f"must be at least {ctx.get('min_length')} characters"),
        "string_too_long": f"must be at most {ctx.get('max_length')} characters",
        "model_type": "must be an object",
        "dict_type": "must be an object",
        "list_type": "must be a list",
        "model_attributes_type": "must be an object",
    }
    if kind == "extra_forbidden":
        return ValidationFailed(f"unknown field: {field}", field=field)
    words = messages.get(kind)
    if words is None:
        words = err["msg"][:1].lower() + err["msg"][1:]
    return ValidationFailed(f"{field} {words}", field=field)
