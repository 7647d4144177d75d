"""Actions: what a core worker can run, and how a package adds its own.

An action has a name, a params model, an optional result model, a handler and an optional
HTTP route. The built-in users CRUD and `runJob` (`reference.builtin_actions`) are ordinary
actions; a package adds its own without editing this one:

    class Greet(Params):
        name: str

    async def greet(ctx: ActionContext, p: Greet) -> Outcome:
        return Outcome(f"hello {p.name}", {"greeting": f"hello {p.name}"})

    GREET = Action("greet", Greet, greet, route=Route("POST", "/greetings"))

and declares it through the entry point group `reference.actions` (`greet = "mypkg:GREET"`) or
`REFERENCE_ACTIONS=mypkg:GREET` (comma-separated; an attribute may be an Action, a list of
them, or a function returning either). `serve` and `worker` load them at start: the API and the
worker must load the same set.

The params model validates on both sides: the API answers 422 before it publishes, and the
worker checks again, since anyone who can reach the queue can publish.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from reference.errors import ConfigError, UnknownAction
from reference.messages import Principal
from reference.ports import UserRepository
from reference.records import MalformedRecord
from reference.schemas import Params, dump, parse

ENTRY_POINT_GROUP = "reference.actions"
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

ProgressReporter = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What a handler gets besides its params."""

    request_id: str
    users: UserRepository
    report_progress: ProgressReporter  # (percent 0..100, detail) -> a Running record update
    principal: Principal | None = None  # who asked (None: a trusted producer)
    deadline: int | None = None  # epoch ms the request had to start by, if it had one
    resources: Mapping[str, Any] = field(default_factory=dict)  # ActionRegistry.provide(...)
    log: logging.LoggerAdapter[logging.Logger] | None = None  # tagged with the request id


@dataclass(frozen=True, slots=True)
class Outcome:
    """A handler's success: the record's `detail` and its `result` (a model or JSON data)."""

    detail: str
    result: Any = None


class NoResult:
    """Result model of an action that returns nothing: a Success record without `result`."""


Handler = Callable[[ActionContext, Any], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Route:
    """How HTTP reaches an action. `path` is Sanic's syntax (`/users/<id>`); path parameters
    and the JSON body (POST, PUT, PATCH) or the query string (GET, DELETE) together make the
    params. `location` is a path template filled from the result for a Location header
    (`"/users/{id}"`, for 201); OpenAPI links it to the operations on that path."""

    method: str
    path: str
    status: int = 200
    location: str | None = None

    def location_of(self, result: Any) -> str | None:
        if self.location is None or not isinstance(result, dict):
            return None
        try:
            return self.location.format_map(result)
        except (KeyError, ValueError, IndexError):
            return None

    @property
    def takes_body(self) -> bool:
        return self.method in {"POST", "PUT", "PATCH"}


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    params: type[BaseModel]
    handler: Handler
    result: type[BaseModel] | type[NoResult] | None = None  # None: any JSON result
    route: Route | None = None
    summary: str = ""
    roles: tuple[str, ...] = ()  # roles a caller's token needs (REFERENCE_ROLES_POLICY overrides)

    def parse_params(self, params: Any) -> BaseModel:
        """Params as this action's model (raises ValidationFailed)."""
        return parse(self.params, params)

    def validate(self, params: Any) -> dict[str, Any]:
        """Check and normalise params (raises ValidationFailed): the dict that is published."""
        normal: dict[str, Any] = dump(self.parse_params(params))
        return normal

    def check_result(self, result: Any) -> None:
        """Raise MalformedRecord for a Success result this action cannot have given."""
        if self.result is None:
            return
        if self.result is NoResult:
            if result is not None:
                raise MalformedRecord("result must be absent")
            return
        try:
            parse(self.result, result)  # type: ignore[arg-type]
        except Exception as exc:
            raise MalformedRecord(f"result: {exc}") from None

    async def run(self, ctx: ActionContext, params: BaseModel) -> Outcome:
        """Run the handler on checked params (from `parse_params`)."""
        outcome = await self.handler(ctx, params)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"action {self.name} returned {type(outcome).__name__}, "
                            "not an Outcome")
        return Outcome(outcome.detail, dump(outcome.result))


class ActionRegistry:
    """The actions a service knows, by name, with the shared resources handlers may use."""

    def __init__(self, actions: Iterable[Action] = ()) -> None:
        self._by_name: dict[str, Action] = {}
        self._resources: dict[str, Any] = {}
        for action in actions:
            self.register(action)

    def register(self, action: Action) -> Action:
        if not isinstance(action, Action):
            raise ConfigError(f"not an Action: {action!r}")
        if not (isinstance(action.params, type) and issubclass(action.params, BaseModel)):
            raise ConfigError(f"action {action.name}: params must be a pydantic model class")
        if action.name in self._by_name and self._by_name[action.name] != action:
            raise ConfigError(f"action {action.name!r} is registered twice")
        route = action.route
        if route is not None:
            if route.method not in HTTP_METHODS:
                raise ConfigError(f"action {action.name}: unknown HTTP method {route.method}")
            for other in self._by_name.values():
                if (other.name != action.name and other.route is not None
                        and (other.route.method, other.route.path) == (route.method, route.path)):
                    raise ConfigError(f"actions {other.name} and {action.name} both route "
                                      f"{route.method} {route.path}")
        self._by_name[action.name] = action
        return action

    def provide(self, name: str, resource: Any) -> None:
        """Offer a shared object to every handler as `ctx.resources[name]`."""
        self._resources[name] = resource

    @property
    def resources(self) -> Mapping[str, Any]:
        return MappingProxyType(self._resources)

    def lookup(self, name: str) -> Action:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownAction(f"unknown action: {name}") from None

    def validate(self, name: str, params: Any) -> dict[str, Any]:
        """Check and normalise the params of an action; raises UnknownAction or
        ValidationFailed."""
        return self.lookup(name).validate(params)

    def __iter__(self) -> Iterator[Action]:
        return iter(self._by_name.values())

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)

    def copy(self) -> ActionRegistry:
        other = ActionRegistry(self)
        other._resources.update(self._resources)
        return other


def builtin() -> ActionRegistry:
    """The users CRUD and runJob."""
    from reference.builtin_actions import BUILTIN

    return ActionRegistry(BUILTIN)


def _import(spec: str, origin: str) -> Any:
    module_name, _, attr = spec.strip().partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{origin}: {spec!r} is not module:attribute")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # one readable line, whatever the import raised
        raise ConfigError(f"{origin}: cannot import {module_name!r}: "
                          f"{type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{origin}: {module_name!r} has no attribute {attr!r}") from None
    return target


def _actions_of(target: Any, origin: str) -> list[Action]:
    if isinstance(target, Action):
        return [target]
    if callable(target) and not isinstance(target, type):
        return _actions_of(target(), origin)
    if isinstance(target, Iterable) and not isinstance(target, str | bytes):
        found = list(target)
        if all(isinstance(a, Action) for a in found):
            return found
    raise ConfigError(f"{origin}: expected an Action, a list of Actions, or a function "
                      f"returning them; got {type(target).__name__}")


def load_actions(spec: str = "", *, use_entry_points: bool = True) -> ActionRegistry:
    """The built-in actions, then those of installed packages (entry point group
    `reference.actions`), then those named in `spec` (REFERENCE_ACTIONS)."""
    registry = builtin()
    if use_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            origin = f"entry point {ep.name} ({ep.value})"
            for action in _actions_of(_import(ep.value, origin), origin):
                registry.register(action)
    for item in filter(None, (s.strip() for s in spec.split(","))):
        origin = f"REFERENCE_ACTIONS {item}"
        for action in _actions_of(_import(item, origin), origin):
            registry.register(action)
    return registry


__all__ = [
    "ENTRY_POINT_GROUP",
    "Action",
    "ActionContext",
    "ActionRegistry",
    "NoResult",
    "Outcome",
    "Params",
    "Route",
    "builtin",
    "load_actions",
]
