"""Image references (`registry/repository:tag@digest`) parsed the way docker reads them. No I/O.

>>> ref = parse_reference("127.0.0.1:5000/team/app:v1")
>>> ref.registry, ref.repository, ref.tag
('127.0.0.1:5000', 'team/app', 'v1')
>>> parse_reference("alpine").registry, parse_reference("alpine").repository
('docker.io', 'library/alpine')
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from .digest import Digest
from .errors import RegistryError
from .names import is_valid_tag, validate_name

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# The key docker writes Docker Hub credentials under in config.json.
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"


class ReferenceError(ValueError):
    """A string that is not an image reference; the message says why."""


@dataclass(frozen=True, slots=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest if pinned, else the tag (default `latest`)."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        """The host:port the registry API is served on (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def with_reference(self, reference: str) -> Reference:
        """The same repository at another tag or digest."""
        if ":" in reference:
            return replace(self, tag=None, digest=str(Digest.parse(reference)))
        return replace(self, tag=reference, digest=None)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def parse_reference(text: str) -> Reference:
    """Parse `[registry/]repository[:tag][@digest]`; a missing registry means Docker Hub."""
    original = text
    text = text.removeprefix("docker://")
    if not text:
        raise ReferenceError("empty image reference")
    digest = None
    if "@" in text:
        text, digest_text = text.rsplit("@", 1)
        try:
            digest = str(Digest.parse(digest_text))
        except RegistryError as err:
            raise ReferenceError(f"{original!r}: {err.message}") from None
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not is_valid_tag(tag):
            raise ReferenceError(f"{original!r}: invalid tag {tag!r}")
    first, _, rest = text.partition("/")
    if rest and _looks_like_host(first):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, text
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    try:
        validate_name(repository)
    except RegistryError as err:
        raise ReferenceError(f"{original!r}: {err.message}") from None
    return Reference(registry, repository, tag, digest)


def parse_registry(text: str) -> str:
    """A bare registry host (`host[:port]`, scheme and path tolerated) as config.json keys use it."""
    host = text.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    if not host:
        raise ReferenceError(f"{text!r}: expected a registry host such as 127.0.0.1:5000")
    if host in ("index.docker.io", DOCKER_HUB_API):
        return DOCKER_HUB
    return host


def is_loopback(registry: str) -> bool:
    """localhost and 127.0.0.0/8 / ::1, which docker treats as insecure registries by default."""
    host = registry
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
