"""Docker token-auth scopes (`repository:team/app:pull,push`) and the grants that answer them.

Pure: no I/O. A scope names a resource and the actions asked for; a grant is what a principal
may do on the resources a glob pattern matches; the token carries their intersection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

REPOSITORY_ACTIONS = ("pull", "push", "delete")
CATALOG = ("registry", "catalog")
# The management API; only an administrator's own credentials (not a narrowed token) get it.
ADMIN = ("registry", "admin")
_ACTION = re.compile(r"^[a-z*]{1,16}\Z")
# resource type with an optional class in parentheses, as in `repository(plugin)`
_TYPE = re.compile(r"^([a-z0-9]{1,32})(?:\([a-z0-9]{1,32}\))?\Z")


class ScopeError(ValueError):
    """A scope string that does not follow `type:name:action[,action]`."""


@dataclass(frozen=True, slots=True)
class Scope:
    type: str
    name: str
    actions: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Scope:
        # The name may itself hold colons (`localhost:5000/app`), so split at the first and last.
        kind, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not (sep and sep2 and name) or len(text) > 1024:
            raise ScopeError(f"scope {text[:100]!r} is not TYPE:NAME:ACTIONS, e.g. repository:team/app:pull,push")
        found = _TYPE.match(kind)
        if found is None:
            raise ScopeError(f"scope {text[:100]!r} has an invalid resource type")
        wanted = frozenset(a for a in actions.split(",") if a)
        if not wanted or not all(_ACTION.match(a) for a in wanted):
            raise ScopeError(f"scope {text[:100]!r} has invalid actions")
        return cls(found[1], name, wanted)

    @classmethod
    def parse_many(cls, texts: Iterable[str]) -> list[Scope]:
        """Scopes from query values; one value may also hold several scopes separated by spaces."""
        return [cls.parse(part) for text in texts for part in text.split()]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"

    def claim(self) -> dict[str, object]:
        return {"type": self.type, "name": self.name, "actions": sorted(self.actions)}


@dataclass(frozen=True, slots=True)
class Grant:
    """Actions allowed on every repository whose name matches `pattern` (fnmatch; `*` crosses `/`)."""

    pattern: str
    actions: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Grant:
        """`team/*:pull,push` or the scope form `repository:team/*:pull,push`."""
        if text.startswith("repository:"):
            text = text[len("repository:") :]
        pattern, sep, actions = text.rpartition(":")
        wanted = frozenset(a.strip() for a in actions.split(",") if a.strip())
        if "*" in wanted:
            wanted = frozenset(REPOSITORY_ACTIONS)
        if not sep or not pattern or not wanted:
            raise ScopeError(f"{text[:100]!r} is not PATTERN:ACTIONS, e.g. 'team/*:pull,push'")
        unknown = wanted - set(REPOSITORY_ACTIONS)
        if unknown:
            raise ScopeError(f"unknown action(s) {', '.join(sorted(unknown))}; use {', '.join(REPOSITORY_ACTIONS)}")
        return cls(pattern, wanted)

    def __str__(self) -> str:
        return f"{self.pattern}:{','.join(a for a in REPOSITORY_ACTIONS if a in self.actions)}"


def allowed_actions(grants: Iterable[Grant], repository: str) -> frozenset[str]:
    allowed: set[str] = set()
    for grant in grants:
        if fnmatchcase(repository, grant.pattern):
            allowed |= grant.actions
    return frozenset(allowed)


def may_list_catalog(grants: Iterable[Grant]) -> bool:
    """The catalog names every repository, so only a principal that may pull them all sees it."""
    return any(grant.pattern == "*" and "pull" in grant.actions for grant in grants)


def intersect(requested: Iterable[Scope], grants: tuple[Grant, ...], admin: bool) -> list[Scope]:
    """What of `requested` the grants allow; resources with nothing allowed are left out."""
    granted = []
    for scope in requested:
        if scope.type == "repository":
            allowed = frozenset(REPOSITORY_ACTIONS) if admin else allowed_actions(grants, scope.name)
            actions = scope.actions & allowed
            if "*" in scope.actions and allowed:
                actions = allowed
        elif (scope.type, scope.name) == CATALOG:
            actions = scope.actions & {"*"} if admin or may_list_catalog(grants) else frozenset()
        elif (scope.type, scope.name) == ADMIN:
            actions = scope.actions & {"*"} if admin else frozenset()
        else:
            actions = frozenset()
        if actions:
            granted.append(Scope(scope.type, scope.name, frozenset(actions)))
    return granted
