"""Matching request paths to the Distribution API's endpoints."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The repository name is everything before the endpoint suffix; names may contain slashes.
_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("upload", re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<arg>[^/]*)$")),
    ("blob", re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<arg>[^/]+)$")),
    ("manifest", re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<arg>[^/]+)$")),
    ("tags", re.compile(r"^/v2/(?P<name>.+)/tags/list$")),
    ("referrers", re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<arg>[^/]+)$")),
)


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: str
    name: str = ""
    arg: str = ""


def match(path: str) -> Route | None:
    if path in ("/v2/", "/v2"):
        return Route("base")
    if path == "/v2/_catalog":
        return Route("catalog")
    if not path.startswith("/v2/"):
        return None
    for endpoint, pattern in _ROUTES:
        found = pattern.match(path)
        if found:
            return Route(endpoint, found["name"], found.groupdict().get("arg") or "")
    return None
