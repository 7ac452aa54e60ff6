"""Matching request paths to the Distribution API's endpoints."""

from __future__ import annotations

import re
from dataclasses import dataclass

# One pattern for every endpoint under a repository; the name is everything before the
# endpoint suffix, since names may contain slashes.
_REPOSITORY_ENDPOINT = re.compile(
    r"^/v2/(?P<name>.+)/(?:"
    r"(?P<kind>manifests|referrers)/(?P<ref>[^/]+)"
    r"|blobs/uploads/(?P<upload>[^/]*)"
    r"|blobs/(?P<blob>[^/]+)"
    r"|(?P<tags>tags/list)"
    r")$"
)


# Actions a route may need beyond pull, push and delete on its repository.
LOGIN = "login"  # any authenticated caller (the `/v2/` check that clients log in with)
LIST_CATALOG = "catalog"  # whoever may list the catalog


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
    found = _REPOSITORY_ENDPOINT.match(path)
    if found is None:
        return None
    name = found["name"]
    if found["kind"]:
        return Route("manifest" if found["kind"] == "manifests" else "referrers", name, found["ref"])
    if found["upload"] is not None:
        return Route("upload", name, found["upload"]) if found["upload"] else Route("uploads", name)
    if found["blob"]:
        return Route("blob", name, found["blob"])
    return Route("tags", name)
