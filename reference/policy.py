"""Roles per action: which roles of the caller's token an action needs.

Each action declares the roles it needs by default (`Action.roles`; the built-in user writes
need `users:write`, everything else only a valid token). `REFERENCE_ROLES_POLICY` replaces
them per action: inline JSON or the path of a JSON file, `{"action": ["role", ...]}`; an
action it does not name keeps its default. A caller needs every role listed.

The API checks before it publishes (403 `forbidden`); the worker checks again for every
message that carries a `principal`. A message without one comes from a trusted producer: the
queue is a trust boundary, guarded by RabbitMQ's users and permissions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import orjson

from reference.actions import ActionRegistry
from reference.errors import ConfigError, Forbidden
from reference.messages import Principal


class RolesPolicy:
    def __init__(self, required: Mapping[str, frozenset[str]]) -> None:
        self._required = dict(required)

    @classmethod
    def defaults(cls, registry: ActionRegistry) -> RolesPolicy:
        return cls({a.name: frozenset(a.roles) for a in registry})

    @classmethod
    def load(cls, source: str | None, registry: ActionRegistry) -> RolesPolicy:
        """The actions' defaults, with `source` (REFERENCE_ROLES_POLICY) on top."""
        policy = cls.defaults(registry)
        if not source:
            return policy
        text = source
        if not source.lstrip().startswith(("{", "[")):
            try:
                text = Path(source).read_text()
            except OSError as exc:
                raise ConfigError(f"REFERENCE_ROLES_POLICY: cannot read {source}: "
                                  f"{exc.strerror}") from None
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ConfigError("REFERENCE_ROLES_POLICY is not JSON") from None
        if not isinstance(data, dict):
            raise ConfigError('REFERENCE_ROLES_POLICY must be {"action": ["role", ...]}')
        for action, roles in data.items():
            if action not in registry:
                raise ConfigError(f"REFERENCE_ROLES_POLICY names an unknown action: {action}")
            if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
                raise ConfigError(f"REFERENCE_ROLES_POLICY: the roles of {action} must be a "
                                  "list of non-empty strings")
            policy._required[action] = frozenset(roles)
        return policy

    def required(self, action: str) -> frozenset[str]:
        return self._required.get(action, frozenset())

    @property
    def all_roles(self) -> frozenset[str]:
        """Every role some action needs: what a token for all actions carries."""
        return frozenset().union(*self._required.values())

    def check(self, action: str, principal: Principal | None) -> None:
        """Raise Forbidden when `principal` lacks a role `action` needs (None: trusted)."""
        if principal is None:
            return
        missing = self.required(action) - set(principal.roles)
        if missing:
            raise Forbidden(f"{action} needs the role{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(sorted(missing))}")
