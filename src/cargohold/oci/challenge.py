"""`WWW-Authenticate` challenges (RFC 7235) as registries send them. No I/O.

>>> c = parse_challenge('Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"')
>>> c.scheme, c.params["realm"], c.params["scope"]
('bearer', 'https://auth/token', 'repository:a:pull')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lowercase: "basic" or "bearer"
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge:
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(rest):
        quoted, bare = match.group(2), match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    return Challenge(scheme.lower(), params)


def merge_scopes(*scopes: str) -> tuple[str, ...]:
    """Combine `repository:name:actions` scopes, uniting the actions of one resource, sorted.

    >>> merge_scopes("repository:a:pull", "repository:a:push", "repository:b:pull")
    ('repository:a:pull,push', 'repository:b:pull')
    """
    merged: dict[str, set[str]] = {}
    for scope in scopes:
        for one in scope.split():
            resource, _, actions = one.rpartition(":")
            if not resource:
                continue
            merged.setdefault(resource, set()).update(a for a in actions.split(",") if a)
    return tuple(f"{resource}:{','.join(sorted(actions))}" for resource, actions in sorted(merged.items()))
