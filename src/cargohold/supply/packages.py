"""The supply chain's pure model: what an image contains, as its SBOM and its scan see it.

A `Package` is one installed package found in an image's merged filesystem; a `Catalog` is all
of them with the distribution the image is built on. Nothing here reads files or talks to a
store: the catalogers fill these in, the SBOM writers, the matcher and the lint read them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

# The purl type of a package, which also names its version order (supply/versions.py).
PackageType = Literal["deb", "apk", "rpm", "pypi", "npm", "golang"]

# OSV ecosystem names of the language ecosystems (https://ossf.github.io/osv-schema/#affectedpackage-field).
LANGUAGE_ECOSYSTEMS: dict[str, str] = {"pypi": "PyPI", "npm": "npm", "golang": "Go"}


@dataclass(frozen=True)
class Distro:
    """The distribution an image is built on, from its `etc/os-release` (or `usr/lib/os-release`)."""

    id: str  # ID=, lower case: debian, ubuntu, alpine, rhel, almalinux, rocky, fedora, opensuse-leap...
    version_id: str = ""  # VERSION_ID=: "12", "3.19.1", "9.3"
    codename: str = ""  # VERSION_CODENAME=: bookworm
    pretty_name: str = ""  # PRETTY_NAME=
    id_like: tuple[str, ...] = ()  # ID_LIKE=, split

    @property
    def label(self) -> str:
        return self.pretty_name or f"{self.id} {self.version_id}".strip()


@dataclass(frozen=True)
class Package:
    """One installed package.

    `ecosystem` is the OSV ecosystem advisories name it by, with the distribution release where
    the ecosystem has them ("Debian:12", "Alpine:v3.19", "AlmaLinux:9", "PyPI", "npm", "Go");
    `source`/`source_version` the source package it was built from (dpkg's Source field, the
    name and version in rpm's SOURCERPM), which distribution advisories are written against.
    `layer` is the digest of the layer that last wrote the package's record; `location` the
    path of that record in the image (`var/lib/dpkg/status`, `usr/lib/python3/dist-packages/
    idna-3.3.dist-info/METADATA`, `usr/local/bin/app` for a Go binary's module).
    """

    type: PackageType
    name: str
    version: str
    ecosystem: str
    purl: str
    licenses: tuple[str, ...] = ()
    layer: str | None = None
    location: str = ""
    source: str | None = None
    source_version: str | None = None
    arch: str | None = None

    @property
    def advisory_name(self) -> str:
        """The name distribution advisories use: the source package where there is one."""
        return self.source or self.name

    @property
    def advisory_version(self) -> str:
        return self.source_version or self.version


@dataclass
class Catalog:
    """What an image holds: its packages in a stable order, the distribution, the layers read."""

    image: str  # the image manifest's digest
    distro: Distro | None
    packages: list[Package] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # layer digests, bottom first
    platform: str = ""  # os/arch[/variant] of the image

    def sort(self) -> None:
        self.packages.sort(key=lambda p: (p.type, p.name, p.version, p.location))


def catalog_to_dict(catalog: Catalog) -> dict[str, Any]:
    """The catalogue as JSON-ready data (stored per image digest, so re-evaluation needs no layer read)."""
    return asdict(catalog)


def catalog_from_dict(data: dict[str, Any]) -> Catalog:
    distro = data.get("distro")
    known = {f.name for f in fields(Catalog)}
    catalog = Catalog(**{key: value for key, value in data.items() if key in known})
    catalog.distro = Distro(**{**distro, "id_like": tuple(distro.get("id_like", ()))}) if distro else None
    catalog.packages = [Package(**{**p, "licenses": tuple(p.get("licenses", ()))}) for p in data.get("packages", [])]
    return catalog
