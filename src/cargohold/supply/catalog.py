"""An image's catalogue: one walk over its layers with every cataloger's interest, then each
package named as the advisories name it (its OSV ecosystem) and as a purl."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from packageurl import PackageURL

from .catalogers import Findings, Found, apk, dpkg, golang, npm, osrelease, python, rpm
from .layers import DEFAULT_CONTENT_CAP, Interest, LayerSource, LayerStats, MergedFiles, walk_layers
from .packages import LANGUAGE_ECOSYSTEMS, Catalog, Distro, Package

CATALOGERS = (dpkg, apk, rpm, python, npm, golang)
INTERESTS: tuple[Interest, ...] = (osrelease.INTEREST, *(cataloger.INTEREST for cataloger in CATALOGERS))

# OSV's names of the rpm distributions (https://ossf.github.io/osv-schema/#affectedpackage-field),
# by os-release ID; a `:<major>` follows where OSV writes releases.
_RPM_ECOSYSTEMS = {"rhel": "Red Hat", "almalinux": "AlmaLinux:", "rocky": "Rocky Linux:", "sles": "SUSE"}
_RPM_NAMESPACES = {"rhel": "redhat", "opensuse-leap": "opensuse", "opensuse-tumbleweed": "opensuse", "sles": "suse"}


@dataclass
class ImageCatalog(Catalog):
    """A Catalog with what the walk measured of each layer, and what could not be read."""

    layer_stats: list[LayerStats] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "path: why" for each record left out


def catalog_image(
    image_digest: str,
    layers: Iterable[LayerSource],
    *,
    platform: str = "",
    content_cap: int = DEFAULT_CONTENT_CAP,
) -> ImageCatalog:
    """Walk the layers (bottom first) once and catalogue the packages of the final filesystem."""
    return catalog_files(image_digest, walk_layers(layers, INTERESTS, content_cap=content_cap), platform=platform)


def catalog_files(image_digest: str, files: MergedFiles, *, platform: str = "") -> ImageCatalog:
    """The catalogue of a walk that ran (at least) `INTERESTS`: one walk can serve several analyses."""
    distro = osrelease.find_distro(files)
    findings = Findings()
    for cataloger in CATALOGERS:
        found = cataloger.find(files)
        findings.packages.extend(found.packages)
        findings.unreadable.extend(found.unreadable)
    catalog = ImageCatalog(
        image=image_digest,
        distro=distro,
        packages=[package_of(record, distro) for record in findings.packages],
        layers=[stats.digest for stats in files.layers],
        platform=platform,
        layer_stats=list(files.layers),
        unreadable=findings.unreadable
        + [f"{path}: larger than the content cap" for s in files.layers for path in s.over_cap],
    )
    catalog.sort()
    return catalog


def package_of(found: Found, distro: Distro | None) -> Package:
    return Package(
        type=found.type,
        name=found.name,
        version=found.version,
        ecosystem=ecosystem_of(found.type, distro),
        purl=purl_of(found, distro),
        licenses=found.licenses,
        layer=found.layer,
        location=found.location,
        source=found.source,
        source_version=found.source_version,
        arch=found.arch,
    )


def _major(version_id: str) -> str:
    return version_id.split(".", 1)[0]


def ecosystem_of(package_type: str, distro: Distro | None) -> str:
    """The OSV ecosystem of a package of this type in this distribution. A distribution OSV has
    no name for gets the package format's name (DEB, APK, RPM): recorded, matched by nothing."""
    if package_type in LANGUAGE_ECOSYSTEMS:
        return LANGUAGE_ECOSYSTEMS[package_type]
    distro_id = distro.id if distro else ""
    version_id = distro.version_id if distro else ""
    if package_type == "deb":
        if distro_id == "debian":
            return f"Debian:{_major(version_id)}" if version_id else "Debian"
        if distro_id == "ubuntu" and distro is not None:
            return f"Ubuntu:{version_id}:LTS" if _is_lts(distro) else f"Ubuntu:{version_id}"
        return "DEB"
    if package_type == "apk":
        if distro_id == "alpine" and version_id:
            return "Alpine:v" + ".".join(version_id.split(".")[:2])
        return {"wolfi": "Wolfi", "chainguard": "Chainguard"}.get(distro_id, "APK")
    if package_type == "rpm":
        if distro_id.startswith("opensuse"):
            return "openSUSE"
        name = _RPM_ECOSYSTEMS.get(distro_id)
        if name is None:
            return "RPM"
        return f"{name}{_major(version_id)}" if name.endswith(":") else name
    raise ValueError(f"unknown package type {package_type!r}")


def _is_lts(distro: Distro) -> bool:
    """Ubuntu's LTS releases: PRETTY_NAME says so; failing that, the even years' April releases."""
    if "LTS" in distro.pretty_name:
        return True
    year, _, month = distro.version_id.partition(".")
    return not distro.pretty_name and year.isdigit() and int(year) % 2 == 0 and month == "04"


def purl_of(found: Found, distro: Distro | None) -> str:
    distro_id = distro.id if distro else ""
    qualifiers: dict[str, str] = {}
    if found.arch:
        qualifiers["arch"] = found.arch
    namespace: str | None = None
    name = found.name
    version = found.version
    if found.type == "deb":
        namespace = distro_id or "debian"
        if distro is not None and distro.version_id:
            qualifiers["distro"] = f"{distro_id}-{distro.version_id}"
    elif found.type == "apk":
        namespace = distro_id or "alpine"
    elif found.type == "rpm":
        namespace = _RPM_NAMESPACES.get(distro_id, distro_id or "rpm")
        if found.epoch:
            qualifiers["epoch"] = str(found.epoch)
            version = version.removeprefix(f"{found.epoch}:")
    elif found.type == "pypi":
        name = python.normalise_name(name)
    elif found.type == "npm" and name.startswith("@") and "/" in name:
        namespace, name = name.split("/", 1)
    elif found.type == "golang" and "/" in name:
        namespace, name = name.rsplit("/", 1)
    return str(PackageURL(type=found.type, namespace=namespace, name=name, version=version, qualifiers=qualifiers))
