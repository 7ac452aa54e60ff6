"""Where an image is: a registry reference, an OCI layout, or a docker-archive tarball. No I/O.

Written as skopeo writes them:

    >>> parse_location("oci:./img:v1")
    Location(transport='oci', path='./img', name='v1', reference=None)
    >>> parse_location("docker-archive:app.tar:app:v1").name
    'app:v1'
    >>> parse_location("127.0.0.1:5000/team/app:v1").reference.repository
    'team/app'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .names import is_valid_tag
from .reference import Reference, parse_reference

Transport = Literal["registry", "oci", "docker-archive"]
PREFIXES: dict[str, Transport] = {"oci:": "oci", "docker-archive:": "docker-archive", "docker://": "registry"}


@dataclass(frozen=True, slots=True)
class Location:
    transport: Transport
    path: str | None = None  # oci / docker-archive
    name: str | None = None  # oci: the tag in index.json; docker-archive: the image's name:tag
    reference: Reference | None = None  # registry

    def __str__(self) -> str:
        if self.transport == "registry":
            return str(self.reference)
        return f"{self.transport}:{self.path}" + (f":{self.name}" if self.name else "")


def parse_location(text: str, default: Transport = "registry") -> Location:
    """Parse `oci:PATH[:TAG]`, `docker-archive:PATH[:NAME:TAG]`, `[docker://]REF`, or a bare PATH for `default`."""
    transport: Transport = default
    for prefix, kind in PREFIXES.items():
        if text.startswith(prefix):
            transport, text = kind, text[len(prefix) :] if kind != "registry" else text
            break
    if transport == "registry":
        return Location("registry", reference=parse_reference(text))
    if not text:
        raise ValueError(f"{transport}: needs a path")
    if transport == "oci":
        path, sep, tag = text.rpartition(":")
        if sep and path and "/" not in tag and is_valid_tag(tag):
            return Location("oci", path=path, name=tag)
        return Location("oci", path=text)
    path, _, name = text.partition(":")
    return Location("docker-archive", path=path, name=name or None)
