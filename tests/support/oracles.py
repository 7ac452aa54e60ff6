"""What the package managers themselves say a root filesystem holds: the truth the SBOM is held to.

Each function runs the real tool over a directory (dpkg-query, pip list, npm ls, go version -m,
rpm -qa) and returns its answer as `Component`s; nothing here guesses from file names. An image
builder calls `snapshot()` after every layer, so the truth also says which layer brought each
package in (tests/support/images.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.support.clients import run
from tests.support.servers import require_tool

DPKG_STATUS = "var/lib/dpkg/status"
RPMDB = "var/lib/rpm/rpmdb.sqlite"
APK_INSTALLED = "lib/apk/db/installed"
NPM_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "supply" / "npm-cache"


@dataclass(frozen=True)
class Component:
    """One installed package as its own manager reports it.

    `version` is what the manager prints (dpkg's with its epoch; rpm's VERSION-RELEASE, the epoch
    apart as purl has it); `source` the package it was built from where the manager names one
    (dpkg's Source, apk's origin, the name in rpm's SOURCERPM); `location` the file holding its
    record, relative to the root; `layer` the index (bottom first) of the layer since which it is
    present at this version, `record_layer` the last layer that rewrote `location`."""

    type: str
    name: str
    version: str
    location: str
    source: str | None = None
    source_version: str | None = None
    license: str | None = None
    epoch: str | None = None
    replaced_by: str | None = None  # a replaced Go dependency: "REQUIRED VERSION => REPLACEMENT VERSION"
    main_module: bool = False  # a Go binary's own module (the `mod` line)
    layer: int = -1
    record_layer: int = -1

    @property
    def key(self) -> tuple[str, str, str]:
        """What an SBOM's purl must carry: type, name (PyPI's normalised) and version."""
        name = canonicalize_name(self.name) if self.type == "pypi" else self.name
        return (self.type, name, self.version)


def dpkg_packages(root: Path) -> list[Component]:
    """`dpkg-query -W` over the root's admin directory: installed packages only (not config-files)."""
    if not (root / DPKG_STATUS).exists():
        return []
    fields = "${db:Status-Abbrev}\t${Package}\t${Version}\t${Source}\t${source:Package}\t${source:Version}\n"
    done = run([require_tool("dpkg-query"), "-W", f"--admindir={root / 'var/lib/dpkg'}", "-f", fields])
    packages = []
    for line in done.stdout.splitlines():
        status, name, version, source_field, source, source_version = line.split("\t")
        if status.strip() != "ii":
            continue
        packages.append(
            Component(
                "deb",
                name,
                version,
                DPKG_STATUS,
                source=source if source_field else None,
                source_version=source_version if source_field else None,
            )
        )
    return packages


def _site_directories(root: Path) -> Iterator[Path]:
    """Every directory of the root that holds an installed distribution's metadata."""
    seen: set[Path] = set()
    for metadata in sorted([*root.rglob("*.dist-info"), *root.rglob("*.egg-info")]):
        if metadata.is_dir() and metadata.parent not in seen:
            seen.add(metadata.parent)
            yield metadata.parent


def pip_packages(root: Path) -> list[Component]:
    """`pip list --path` over every site directory in the root, each entry placed at its dist-info."""
    packages = []
    for site in _site_directories(root):
        pip_list = [sys.executable, "-m", "pip", "list", "--disable-pip-version-check", "--format", "json"]
        listed = run([*pip_list, "--path", str(site)])
        infos: dict[tuple[str, str], Path] = {}
        for info in site.glob("*.dist-info"):
            name, _, version = info.name.removesuffix(".dist-info").partition("-")  # dashes are escaped in both
            infos[(canonicalize_name(name), version)] = info
        for entry in json.loads(listed.stdout):
            listed_info = infos.get((canonicalize_name(entry["name"]), entry["version"]))
            assert listed_info is not None, f"pip lists {entry} in {site}, which has no dist-info for it"
            location = (listed_info / "METADATA").relative_to(root).as_posix()
            packages.append(Component("pypi", entry["name"], entry["version"], location))
    return packages


def _npm_tree(node: dict[str, object], root: Path) -> Iterator[Component]:
    dependencies = node.get("dependencies", {})
    assert isinstance(dependencies, dict)
    for name, child in dependencies.items():
        if "version" not in child or "path" not in child:  # a missing or extraneous entry: not installed
            continue
        location = (Path(child["path"]) / "package.json").relative_to(root).as_posix()
        yield Component("npm", name, child["version"], location)
        yield from _npm_tree(child, root)


def npm_packages(root: Path) -> list[Component]:
    """`npm ls --all` over every project in the root (a directory with a node_modules), deduplicated."""
    npm = require_tool("npm")
    found: dict[tuple[str, str, str], Component] = {}
    for modules in sorted(root.rglob("node_modules")):
        project = modules.parent
        if "node_modules" in project.relative_to(root).parts:
            continue  # a nested node_modules belongs to the project above it
        done = run([npm, "ls", "--all", "--json", "--long", "--prefix", str(project)], env=npm_environment())
        for component in _npm_tree(json.loads(done.stdout), root):
            found.setdefault((component.name, component.version, component.location), component)
    return list(found.values())


def npm_environment() -> dict[str, str]:
    """npm with its cache in the clone's, never in the caller's home, and no network calls but installs."""
    return {
        **os.environ,
        "npm_config_cache": str(NPM_CACHE),
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }


GO_LINE = re.compile(r"^\t(mod|dep|=>)\t(\S+)\t?(\S*)")


def go_modules(root: Path) -> list[Component]:
    """`go version -m` over the whole root: for every Go binary its toolchain (as the module
    `stdlib`, the name Go's advisories use), its main module and the modules linked in.

    A replaced dependency is what its `=>` line says, since that is the code in the binary: the
    replacement module, or for a local directory the required path at the directory's version
    ("(devel)"); the `dep` line's required version is kept in `replaced_by`."""
    done = run([require_tool("go"), "version", "-m", str(root)], env={**os.environ, "GOFLAGS": ""})
    modules: list[Component] = []
    binary = ""
    for line in done.stdout.splitlines():
        if not line.startswith("\t"):
            path, _, toolchain = line.rpartition(": ")
            binary = Path(path).relative_to(root).as_posix()
            modules.append(Component("golang", "stdlib", toolchain.strip().removeprefix("go"), binary))
            continue
        match = GO_LINE.match(line)
        if match is None:
            continue
        kind, path, version = match.groups()
        if kind == "=>":
            required = modules.pop()
            local = path.startswith((".", "/"))
            modules.append(
                dataclasses.replace(
                    required,
                    name=required.name if local else path,
                    version=version,
                    replaced_by=f"{required.name} {required.version} => {path} {version}",
                )
            )
        else:
            modules.append(Component("golang", path, version, binary, main_module=kind == "mod"))
    return modules


RPM_FIELDS = ("NAME", "EPOCH", "VERSION", "RELEASE", "ARCH", "SOURCERPM", "LICENSE")


def rpm_packages(root: Path) -> list[Component]:
    """`rpm -qa` over the root's sqlite database."""
    if not (root / RPMDB).exists():
        return []
    query = "\t".join(f"%{{{field}}}" for field in RPM_FIELDS) + "\n"
    done = run([require_tool("rpm"), "--root", str(root), "--dbpath", "/var/lib/rpm", "-qa", "--qf", query])
    packages = []
    for line in done.stdout.splitlines():
        name, epoch, version, release, _arch, sourcerpm, license = line.split("\t")
        # SOURCERPM is NAME-VERSION-RELEASE.src.rpm: the source's name is what precedes the last two dashes.
        source, source_version, source_release = sourcerpm.removesuffix(".src.rpm").rsplit("-", 2)
        packages.append(
            Component(
                "rpm",
                name,
                f"{version}-{release}",
                RPMDB,
                source=source,
                source_version=f"{source_version}-{source_release}",
                license=license,
                epoch=None if epoch == "(none)" else epoch,
            )
        )
    return packages


def apk_packages(root: Path) -> list[Component]:
    """The entries of the root's apk database (there is no apk here to ask: the entries written are the truth)."""
    path = root / APK_INSTALLED
    if not path.exists():
        return []
    packages = []
    for stanza in path.read_text().split("\n\n"):
        fields = dict(line.split(":", 1) for line in stanza.splitlines() if line[1:2] == ":" and line[0] in "PVoL")
        if "P" in fields:
            origin, license = fields.get("o"), fields.get("L")
            packages.append(Component("apk", fields["P"], fields["V"], APK_INSTALLED, source=origin, license=license))
    return packages


def snapshot(root: Path) -> list[Component]:
    """Every ecosystem's answer for the root as it is now."""
    return [
        *dpkg_packages(root),
        *pip_packages(root),
        *npm_packages(root),
        *go_modules(root),
        *rpm_packages(root),
        *apk_packages(root),
    ]


def file_hashes(root: Path, components: list[Component]) -> dict[str, str]:
    """The content hash of each record file, to tell which layer last wrote it."""
    return {c.location: hashlib.sha256((root / c.location).read_bytes()).hexdigest() for c in components}
