"""The SBOM engine on layers made in the test: the merged filesystem (whiteouts, opaque
directories, replacements, hardlinks, the content cap), each package database's cataloguer on
real bytes (an rpmdb made by rpm, a Go binary made by go build), and both documents validated."""

from __future__ import annotations

import gzip
import io
import json
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
import zstandard

from cargohold.supply.catalog import ImageCatalog, catalog_image, ecosystem_of
from cargohold.supply.catalogers import CatalogError, golang, python, rpm
from cargohold.supply.catalogers.osrelease import parse_os_release
from cargohold.supply.layers import Entry, Keep, LayerError, StreamReader, walk_layers
from cargohold.supply.packages import Distro
from cargohold.supply.sbom import LAYER_PROPERTY, LOCATION_PROPERTY, SOURCE_PROPERTY, cyclonedx_json, spdx_json
from tests.support.layerbuild import (
    MEDIA_TYPES,
    GeneratedStream,
    Layer,
    LayerBuilder,
    blob_layer,
    build_go_binary,
    build_rpmdb,
    go_version,
    padding,
    tar_member,
)

DEBIAN_OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""

STATUS_0 = """Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u5

Package: libcurl4
Status: install ok installed
Architecture: amd64
Source: curl (7.88.1-10+deb12u5)
Version: 7.88.1-10+deb12u5+b1

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: oldthing
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""

# Layer 1 removes tzdata and adds jq, whose Source has no version.
STATUS_1 = """Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u5

Package: libcurl4
Status: install ok installed
Architecture: amd64
Source: curl (7.88.1-10+deb12u5)
Version: 7.88.1-10+deb12u5+b1

Package: jq
Status: install ok installed
Architecture: amd64
Source: jq
Version: 1.6-2.1
"""

CURL_COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: curl

Files: *
Copyright: 1996-2023 Daniel Stenberg
License: curl

Files: debian/*
Copyright: Someone
License: MIT
 Permission is hereby granted...
"""


def metadata(name: str, version: str, extra: str = "") -> str:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{extra}\nA long description.\n"


def package_json(name: str, version: str, license: str = "MIT") -> str:
    return json.dumps({"name": name, "version": version, "license": license})


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_go_binary(tmp_path_factory.mktemp("go"))


@pytest.fixture(scope="module")
def debian_layers(go_binary: bytes) -> list[Layer]:
    bottom = (
        LayerBuilder()
        .dir("etc")
        .symlink("etc/os-release", "../usr/lib/os-release")
        .file("usr/lib/os-release", DEBIAN_OS_RELEASE)
        .file("var/lib/dpkg/status", STATUS_0)
        .file("usr/share/doc/libcurl4/copyright", CURL_COPYRIGHT)
        .file("usr/share/doc/tzdata/copyright", "This is free-form text.\nLicense: not read\n")
        .file(
            "usr/lib/python3/dist-packages/idna-3.3.dist-info/METADATA",
            metadata("idna", "3.3", "License: BSD-3-Clause"),
        )
        .file("usr/lib/python3/dist-packages/requests-2.31.0.dist-info/METADATA", metadata("requests", "2.31.0"))
        .file("usr/lib/python3/dist-packages/requests-2.31.0.dist-info/RECORD", "")
        .file("opt/data/node_modules/left-pad/package.json", package_json("left-pad", "1.3.0"))
        .file("srv/app/node_modules/lodash/package.json", package_json("lodash", "4.17.21"))
        .file("usr/local/bin/app", go_binary, mode=0o755)
        .hardlink("usr/local/bin/app-link", "usr/local/bin/app")
        .layer("gzip")
    )
    middle = (
        LayerBuilder()
        .file("var/lib/dpkg/status", STATUS_1)
        .whiteout("usr/lib/python3/dist-packages/requests-2.31.0.dist-info")
        .file(
            "opt/data/new/node_modules/@scope/thing/package.json",
            package_json("@scope/thing", "2.0.0", "(MIT OR Apache-2.0)"),
        )
        .opaque("opt/data")  # after the same layer's file: that one stays
        .file("srv/app", "a file where a directory was")
        .file(
            "usr/lib/python3/dist-packages/Zope.Interface-6.0.dist-info/METADATA",
            metadata("Zope.Interface", "6.0", "Classifier: License :: OSI Approved :: Zope Public License"),
        )
        .layer("zstd")
    )
    top = (
        LayerBuilder()
        .file("var/lib/dpkg/status", STATUS_1)  # rewritten unchanged, as a `chown -R` layer would
        .file(
            "usr/lib/python3/dist-packages/idna-3.3.dist-info/METADATA",
            metadata("idna", "3.3", "License: BSD-3-Clause"),
        )
        .file("usr/lib/node_modules/npm/package.json", package_json("npm", "10.2.4", "Artistic-2.0"))
        .file("usr/lib/node_modules/npm/lib/package.json", package_json("not-a-package", "0.0.0"))
        .file("usr/lib/node_modules/npm/node_modules/semver/package.json", package_json("semver", "7.5.4", "ISC"))
        # An uncompressed layer labelled gzip, as some tools write: the bytes are sniffed.
        .layer("none", media_type=MEDIA_TYPES["gzip"])
    )
    return [bottom, middle, top]


@pytest.fixture(scope="module")
def debian_image(debian_layers: list[Layer]) -> ImageCatalog:
    return catalog_image("sha256:" + "ab" * 32, debian_layers, platform="linux/amd64")


def digests(layers: list[Layer]) -> list[str]:
    return [digest for digest, _, _ in layers]


def summary(catalog: ImageCatalog) -> set[tuple[str, str, str, str]]:
    return {(p.type, p.name, p.version, p.location) for p in catalog.packages}


def test_the_final_package_set(debian_image: ImageCatalog) -> None:
    lib = "usr/lib/python3/dist-packages"
    go = go_version()
    assert summary(debian_image) == {
        ("deb", "base-files", "12.4+deb12u5", "var/lib/dpkg/status"),
        ("deb", "libcurl4", "7.88.1-10+deb12u5+b1", "var/lib/dpkg/status"),
        ("deb", "jq", "1.6-2.1", "var/lib/dpkg/status"),
        ("pypi", "idna", "3.3", f"{lib}/idna-3.3.dist-info/METADATA"),
        ("pypi", "Zope.Interface", "6.0", f"{lib}/Zope.Interface-6.0.dist-info/METADATA"),
        ("npm", "@scope/thing", "2.0.0", "opt/data/new/node_modules/@scope/thing/package.json"),
        ("npm", "npm", "10.2.4", "usr/lib/node_modules/npm/package.json"),
        ("npm", "semver", "7.5.4", "usr/lib/node_modules/npm/node_modules/semver/package.json"),
        *(
            (kind, name, version, location)
            for location in ("usr/local/bin/app", "usr/local/bin/app-link")
            for kind, name, version in [
                ("golang", "example.com/app", "(devel)"),
                ("golang", "example.com/greeting", "(devel)"),
                ("golang", "stdlib", go),
            ]
        ),
    }


def test_sources_layers_and_licences(debian_image: ImageCatalog, debian_layers: list[Layer]) -> None:
    bottom, middle, top = digests(debian_layers)
    by_name = {p.name: p for p in debian_image.packages if p.location != "usr/local/bin/app-link"}
    curl = by_name["libcurl4"]
    assert (curl.source, curl.source_version, curl.advisory_name, curl.advisory_version) == (
        "curl",
        "7.88.1-10+deb12u5",
        "curl",
        "7.88.1-10+deb12u5",
    )
    assert curl.licenses == ("curl", "MIT")
    assert (by_name["jq"].source, by_name["jq"].source_version, by_name["jq"].advisory_version) == (
        "jq",
        None,
        "1.6-2.1",
    )
    assert by_name["base-files"].source is None and by_name["base-files"].licenses == ()
    # The layer that brought each package's current version, not the ones that rewrote its record.
    assert {
        name: by_name[name].layer for name in ("base-files", "libcurl4", "jq", "idna", "npm", "example.com/app")
    } == {
        "base-files": bottom,
        "libcurl4": bottom,
        "jq": middle,
        "idna": bottom,
        "npm": top,
        "example.com/app": bottom,
    }
    assert by_name["idna"].licenses == ("BSD-3-Clause",)
    assert by_name["Zope.Interface"].licenses == ("Zope Public License",)
    assert by_name["@scope/thing"].licenses == ("(MIT OR Apache-2.0)",)


def test_ecosystems_and_purls(debian_image: ImageCatalog) -> None:
    assert debian_image.distro == Distro("debian", "12", "bookworm", "Debian GNU/Linux 12 (bookworm)")
    purls = {p.name: (p.ecosystem, p.purl) for p in debian_image.packages if p.location != "usr/local/bin/app-link"}
    assert purls["libcurl4"] == (
        "Debian:12",
        "pkg:deb/debian/libcurl4@7.88.1-10%2Bdeb12u5%2Bb1?arch=amd64&distro=debian-12",
    )
    assert purls["idna"] == ("PyPI", "pkg:pypi/idna@3.3")
    assert purls["Zope.Interface"] == ("PyPI", "pkg:pypi/zope-interface@6.0")
    assert purls["@scope/thing"] == ("npm", "pkg:npm/%40scope/thing@2.0.0")
    assert purls["example.com/app"] == ("Go", "pkg:golang/example.com/app@%28devel%29")
    assert purls["stdlib"] == ("Go", f"pkg:golang/stdlib@{go_version()}")


def test_layer_stats(debian_image: ImageCatalog, debian_layers: list[Layer]) -> None:
    stats = debian_image.layer_stats
    assert [s.compression for s in stats] == ["gzip", "zstd", "none"]
    assert [s.entries for s in stats] == [13, 6, 5]
    assert stats[2].media_type == MEDIA_TYPES["gzip"]
    assert all(s.uncompressed_size % 512 == 0 and s.uncompressed_size >= 512 * s.entries for s in stats)
    assert stats[2].compressed_size == stats[2].uncompressed_size
    assert stats[0].compressed_size < stats[0].uncompressed_size
    assert debian_image.layers == digests(debian_layers)
    assert debian_image.unreadable == []


def test_ecosystem_names() -> None:
    def distro(id: str, version: str, pretty: str = "") -> Distro:
        return Distro(id=id, version_id=version, pretty_name=pretty)

    assert ecosystem_of("deb", distro("ubuntu", "22.04", "Ubuntu 22.04.4 LTS")) == "Ubuntu:22.04:LTS"
    assert ecosystem_of("deb", distro("ubuntu", "23.10", "Ubuntu 23.10")) == "Ubuntu:23.10"
    assert ecosystem_of("deb", distro("debian", "11")) == "Debian:11"
    assert ecosystem_of("deb", None) == "DEB"
    assert ecosystem_of("apk", distro("alpine", "3.19.1")) == "Alpine:v3.19"
    assert ecosystem_of("rpm", distro("almalinux", "9.3")) == "AlmaLinux:9"
    assert ecosystem_of("rpm", distro("rocky", "8.9")) == "Rocky Linux:8"
    assert ecosystem_of("rpm", distro("rhel", "9.3")) == "Red Hat"
    assert ecosystem_of("rpm", distro("opensuse-leap", "15.5")) == "openSUSE"
    assert ecosystem_of("rpm", distro("sles", "15.5")) == "SUSE"
    assert ecosystem_of("rpm", distro("fedora", "39")) == "RPM"
    assert ecosystem_of("golang", None) == "Go"


# --- apk and rpm images ------------------------------------------------------------------------

APK_INSTALLED = """C:Q1abc=
P:musl
V:1.2.4-r2
A:x86_64
L:MIT
o:musl
T:the musl c library

C:Q1def=
P:busybox-binsh
V:1.36.1-r15
A:x86_64
L:GPL-2.0-only
o:busybox
"""


def test_an_alpine_image() -> None:
    layer = (
        LayerBuilder()
        .file("etc/os-release", 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME="Alpine Linux v3.19"\n')
        .file("lib/apk/db/installed", APK_INSTALLED)
        .layer("gzip")
    )
    catalog = catalog_image("sha256:" + "cd" * 32, [layer])
    assert [(p.name, p.version, p.source, p.licenses, p.ecosystem, p.purl, p.layer) for p in catalog.packages] == [
        (
            "busybox-binsh",
            "1.36.1-r15",
            "busybox",
            ("GPL-2.0-only",),
            "Alpine:v3.19",
            "pkg:apk/alpine/busybox-binsh@1.36.1-r15?arch=x86_64",
            layer[0],
        ),
        ("musl", "1.2.4-r2", "musl", ("MIT",), "Alpine:v3.19", "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64", layer[0]),
    ]


@pytest.fixture(scope="module")
def rpmdb(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_rpmdb(
        tmp_path_factory.mktemp("rpm"),
        [
            {"name": "bash", "version": "5.1.8", "release": "6.el9", "epoch": "1", "license": "GPL-3.0-or-later"},
            {"name": "zlib", "version": "1.2.11", "release": "40.el9", "license": "zlib and Boost"},
        ],
    )


def test_an_almalinux_image(rpmdb: bytes) -> None:
    layer = (
        LayerBuilder()
        .file("etc/os-release", 'NAME="AlmaLinux"\nVERSION_ID="9.3"\nID="almalinux"\nID_LIKE="rhel centos fedora"\n')
        .file("var/lib/rpm/rpmdb.sqlite", rpmdb)
        .layer("zstd")
    )
    catalog = catalog_image("sha256:" + "ef" * 32, [layer])
    found = [
        (p.name, p.version, p.arch, p.source, p.source_version, p.licenses, p.ecosystem, p.purl)
        for p in catalog.packages
    ]
    assert found == [
        (
            "bash",
            "1:5.1.8-6.el9",
            "x86_64",
            "bash",
            "1:5.1.8-6.el9",
            ("GPL-3.0-or-later",),
            "AlmaLinux:9",
            "pkg:rpm/almalinux/bash@5.1.8-6.el9?arch=x86_64&epoch=1",
        ),
        (
            "zlib",
            "1.2.11-40.el9",
            "x86_64",
            "zlib",
            "1.2.11-40.el9",
            ("zlib and Boost",),
            "AlmaLinux:9",
            "pkg:rpm/almalinux/zlib@1.2.11-40.el9?arch=x86_64",
        ),
    ]
    assert {p.location for p in catalog.packages} == {"var/lib/rpm/rpmdb.sqlite"}
    assert catalog.distro is not None and catalog.distro.id_like == ("rhel", "centos", "fedora")


def header_blob(tags: dict[int, str]) -> bytes:
    """An rpm header by hand: string tags only, enough for what the parser reads."""
    entries, data = b"", b""
    for tag, value in tags.items():
        entries += struct.pack(">iIiI", tag, 6, len(data), 1)
        data += value.encode() + b"\0"
    return struct.pack(">II", len(tags), len(data)) + entries + data


def sqlite_bytes(rows: list[tuple[int, bytes]]) -> bytes:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL)")
    connection.executemany("INSERT INTO Packages VALUES (?, ?)", rows)
    connection.commit()
    return connection.serialize()


def test_rpm_headers_skip_gpg_keys_and_refuse_garbage() -> None:
    good = header_blob({1000: "gpg-pubkey", 1001: "fd431d51", 1002: "4ae0493b"})
    other = header_blob(
        {1000: "tzdata", 1001: "2024a", 1002: "1.el9", 1022: "noarch", 1044: "tzdata-2024a-1.el9.src.rpm"}
    )
    records = rpm.parse_rpmdb(sqlite_bytes([(1, good), (2, other)]), location="var/lib/rpm/rpmdb.sqlite")
    assert [(r.name, r.evr, r.arch) for r in records] == [("tzdata", "2024a-1.el9", "noarch")]
    with pytest.raises(CatalogError, match=r"rpmdb.sqlite: package 1: header says 5 entries"):
        rpm.parse_rpmdb(
            sqlite_bytes([(1, struct.pack(">II", 5, 100) + b"\0" * 20)]), location="var/lib/rpm/rpmdb.sqlite"
        )
    with pytest.raises(CatalogError, match="not an sqlite database"):
        rpm.parse_rpmdb(b"garbage", location="var/lib/rpm/rpmdb.sqlite")
    assert rpm.split_sourcerpm("python3.11-3.11.5-1.el9_3.src.rpm") == ("python3.11", "3.11.5-1.el9_3")
    assert rpm.split_sourcerpm("weird") is None


def test_unreadable_records_are_reported_not_fatal() -> None:
    layer = (
        LayerBuilder()
        .file("usr/lib/node_modules/broken/package.json", "{not json")
        .file("usr/lib/python3/site-packages/x-1.dist-info/METADATA", "Metadata-Version: 2.1\nVersion: 1\n")
        .file("var/lib/dpkg/status", "Package: nover\nStatus: install ok installed\n")
        .layer("gzip")
    )
    catalog = catalog_image("sha256:" + "00" * 32, [layer])
    assert catalog.packages == []
    assert sorted(catalog.unreadable) == [
        "usr/lib/node_modules/broken/package.json: not JSON"
        " (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        "usr/lib/python3/site-packages/x-1.dist-info/METADATA: core metadata without Name",
        "var/lib/dpkg/status: record 1 (nover) has no Version field",
    ]


def test_distroless_status_d() -> None:
    layer = (
        LayerBuilder()
        .file(
            "var/lib/dpkg/status.d/libssl3",
            "Package: libssl3\nVersion: 3.0.11-1~deb12u2\nArchitecture: amd64\nSource: openssl\n",
        )
        .file("var/lib/dpkg/status.d/libssl3.md5sums", "d41d8cd98f00b204e9800998ecf8427e  usr/lib/x\n")
        .file("etc/os-release", DEBIAN_OS_RELEASE)
        .layer("gzip")
    )
    catalog = catalog_image("sha256:" + "11" * 32, [layer])
    assert [(p.name, p.version, p.source, p.location) for p in catalog.packages] == [
        ("libssl3", "3.0.11-1~deb12u2", "openssl", "var/lib/dpkg/status.d/libssl3")
    ]


# --- the walk itself ---------------------------------------------------------------------------


class Everything:
    """Keeps every file's content and history, and counts the bytes streamed past."""

    name = "everything"

    def __init__(self, level: Keep = Keep.HISTORY) -> None:
        self.level = level

    def keep(self, entry: Entry) -> Keep:
        return self.level

    def stream(self, entry: Entry) -> StreamReader | None:
        return None


class Counter:
    def __init__(self) -> None:
        self.total = 0

    def feed(self, chunk: bytes) -> bool:
        self.total += len(chunk)
        return True

    def result(self) -> object:
        return self.total


class Counting:
    name = "count"

    def keep(self, entry: Entry) -> Keep:
        return Keep.NOTHING

    def stream(self, entry: Entry) -> StreamReader | None:
        return Counter() if entry.path.startswith("bin/") else None


def test_whiteouts_opaque_directories_and_replacements() -> None:
    bottom = (
        LayerBuilder()
        .dir("./a/")
        .file("./a/one", "1")
        .file("a/sub/two", "2")
        .file("b/three", "3")
        .file("c/four", "4")
        .file("d", "a file that becomes a directory")
        .file("e/five", "5")
        .file("f", "kept, then replaced by something nobody keeps")
        .symlink("g", "a/one")
        .layer("gzip")
    )
    upper = (
        LayerBuilder()
        .opaque("a")
        .file("a/new", "same layer as the opaque marker")
        .whiteout("b")
        .file("b/three", "written back after the whiteout, in the same layer")
        .whiteout("c/four")
        .file("d/inside", "d is a directory now")
        .symlink("e", "a")  # a link where a directory was: what was under it goes
        .file("f", "x" * 200)
        .layer("gzip")
    )
    files = walk_layers([bottom, upper], [Everything(), SmallOnly()])
    contents = {path: kept.content for path, kept in files.items() if kept.entry.kind == "file"}
    assert contents == {
        "a/new": b"same layer as the opaque marker",
        "b/three": b"written back after the whiteout, in the same layer",
        "d/inside": b"d is a directory now",
        "f": b"x" * 200,
    }
    assert {path: kept.entry.kind for path, kept in files.items() if kept.entry.kind != "file"} == {
        "a": "dir",
        "e": "symlink",
        "g": "symlink",
    }
    assert files["b/three"].history == [(upper[0], b"written back after the whiteout, in the same layer")]
    assert files["a/new"].entry.index == 1 and files["a"].entry.index == 0


class SmallOnly:
    """Keeps nothing over 100 bytes: a later, larger write of a path drops the kept older one."""

    name = "small"

    def keep(self, entry: Entry) -> Keep:
        return Keep.CONTENT if entry.size <= 100 else Keep.NOTHING

    def stream(self, entry: Entry) -> StreamReader | None:
        return None


def test_a_replacement_nobody_keeps_drops_the_old_file() -> None:
    bottom = LayerBuilder().file("f", "small").file("g", "small").layer("none")
    upper = LayerBuilder().file("f", "y" * 500).layer("none")
    files = walk_layers([bottom, upper], [SmallOnly()])
    assert sorted(files) == ["g"]


def test_history_holds_each_layer_that_wrote_the_path() -> None:
    layers = [LayerBuilder().file("db", f"version {n}").layer("gzip") for n in range(3)]
    between = LayerBuilder().file("other", "x").layer("gzip")
    files = walk_layers([layers[0], between, layers[1], layers[2]], [Everything()])
    assert files["db"].history == [(layers[n][0], f"version {n}".encode()) for n in range(3)]
    # A deleted path's life starts anew when it is written again.
    gone = LayerBuilder().whiteout("db").layer("gzip")
    back = LayerBuilder().file("db", "reborn").layer("gzip")
    files = walk_layers([layers[0], gone, back], [Everything()])
    assert files["db"].history == [(back[0], b"reborn")]


def test_hardlinks_share_content_and_stream_results() -> None:
    layer = (
        LayerBuilder()
        .file("bin/tool", b"\x7fELF" + b"z" * 5000, mode=0o755)
        .hardlink("bin/alias", "bin/tool")
        .layer("gzip")
    )
    files = walk_layers([layer], [Everything(Keep.CONTENT), Counting()])
    assert files["bin/alias"].entry.kind == "hardlink" and files["bin/alias"].entry.target == "bin/tool"
    assert files["bin/alias"].content == files["bin/tool"].content == b"\x7fELF" + b"z" * 5000
    assert files["bin/alias"].results == files["bin/tool"].results == {"count": 5004}


def test_the_content_cap_is_recorded() -> None:
    layer = LayerBuilder().file("big", b"b" * 4096).file("small", b"s").layer("gzip")
    files = walk_layers([layer], [Everything(Keep.CONTENT)], content_cap=1024)
    assert files["big"].content is None and files["big"].over_cap
    assert files["small"].content == b"s" and not files["small"].over_cap
    assert files.layers[0].over_cap == ("big",)


def test_entries_carry_metadata() -> None:
    layer = LayerBuilder().file("usr/bin/passwd", "x", mode=0o4755, uid=0).dir("tmp/", mode=0o1777).layer("none")
    files = walk_layers([layer], [Everything(Keep.ENTRY)])
    passwd = files["usr/bin/passwd"].entry
    assert (passwd.kind, passwd.mode, passwd.uid, passwd.size, passwd.index) == ("file", 0o4755, 0, 1, 0)
    assert files["tmp"].entry.mode == 0o1777 and files["tmp"].content is None


def test_a_path_that_climbs_out_is_refused() -> None:
    layer = LayerBuilder().file("../../etc/passwd", "root").layer("gzip")
    with pytest.raises(LayerError, match=r"layer sha256:[0-9a-f]{64}: path '../../etc/passwd' climbs out"):
        walk_layers([layer], [Everything()])


def damaged(blob: bytes, at: int) -> bytes:
    flipped = bytearray(blob)
    flipped[at] ^= 0xFF
    return bytes(flipped)


@pytest.mark.parametrize(
    ("blob", "media_type", "message"),
    [
        (b"this is not an archive at all" * 50, MEDIA_TYPES["none"], r"not a tar archive \(.*\)"),
        (gzip.compress(b"\x01" * 2048)[:-12], MEDIA_TYPES["gzip"], r"not a tar archive \(gzip stream corrupt: .*\)"),
        (b"\x1f\x8b" + b"\x00" * 100, MEDIA_TYPES["gzip"], r"not a tar archive \(gzip stream corrupt: .*\)"),
        (
            damaged(
                zstandard.ZstdCompressor(write_checksum=True).compress(LayerBuilder().file("a", "x" * 9000).tar()), -2
            ),
            MEDIA_TYPES["zstd"],
            r"not a tar archive \(zstd stream corrupt: .*checksum\)",
        ),
    ],
)
def test_corrupt_layers(blob: bytes, media_type: str, message: str) -> None:
    with pytest.raises(LayerError, match=r"^layer sha256:[0-9a-f]{64}: " + message):
        walk_layers([blob_layer(blob, media_type)], [Everything()])


def test_truncated_and_damaged_layers() -> None:
    tar = LayerBuilder().file("a", b"x" * 5000).file("b", b"y" * 5000).tar()
    truncated = gzip.compress(tar[:3000])
    with pytest.raises(LayerError, match=r"not a tar archive \(unexpected end of data\)"):
        walk_layers([blob_layer(truncated, MEDIA_TYPES["gzip"])], [Everything()])
    damaged = bytearray(gzip.compress(tar))
    damaged[-6] ^= 0xFF  # the CRC: caught when the stream is drained to its end
    with pytest.raises(LayerError, match="gzip stream corrupt"):
        walk_layers([blob_layer(bytes(damaged), MEDIA_TYPES["gzip"])], [Everything()])
    header_garbage = bytearray(tar)
    header_garbage[512 * 11 + 100] ^= 0xFF  # the second member's header: its checksum no longer holds
    with pytest.raises(LayerError, match=r"not a tar archive \(a corrupt header after 1 entries: bad checksum\)"):
        walk_layers([blob_layer(bytes(header_garbage), MEDIA_TYPES["none"])], [Everything()])


def test_a_failing_blob_source_is_named() -> None:
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            raise OSError("connection reset")

    layer = ("sha256:" + "9" * 64, MEDIA_TYPES["gzip"], lambda: Failing())
    with pytest.raises(LayerError, match=r"reading the blob failed \(OSError: connection reset\)"):
        walk_layers([layer], [Everything()])  # type: ignore[list-item]


# --- the parsers on their own ------------------------------------------------------------------


def test_go_build_info_across_chunk_boundaries(go_binary: bytes) -> None:
    at = go_binary.find(golang.MAGIC)
    for chunk_size in (7, 64 * 1024, at + 5, len(go_binary)):
        reader = golang.BuildInfoReader()
        for start in range(0, len(go_binary), chunk_size):
            if not reader.feed(go_binary[start : start + chunk_size]):
                break
        found = reader.result()
        assert isinstance(found, golang.GoBinary), chunk_size
        assert found.path == "example.com/app"
        assert found.main == golang.Module("example.com/app", "(devel)")
        assert [(d.path, d.version, d.replace) for d in found.deps] == [
            ("example.com/greeting", "v1.2.3", golang.Module("../greeting", "(devel)"))
        ]


def test_go_pre_118_pointer_format_is_unreadable_and_scripts_are_not_go() -> None:
    old = b"\x7fELF" + b"\0" * 60 + golang.MAGIC + bytes([8, 0]) + b"\0" * 16 + b"rest"
    reader = golang.BuildInfoReader()
    reader.feed(old)
    assert reader.result() == golang.UnreadableGoBinary("build information in the pre-Go 1.18 pointer format")
    script = golang.BuildInfoReader()
    assert script.feed(b"#!/bin/sh\n" + golang.MAGIC) is False and script.result() is None


def test_os_release_quoting() -> None:
    distro = parse_os_release(
        b"# comment\nID=ubuntu\nVERSION_ID='22.04'\nPRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nbroken line\n"
    )
    assert (distro.id, distro.version_id, distro.pretty_name) == ("ubuntu", "22.04", "Ubuntu 22.04.4 LTS")


def test_python_names_and_licences() -> None:
    assert python.normalise_name("Zope.Interface__x") == "zope-interface-x"
    record = python.parse_metadata(metadata("x", "1", "License-Expression: MIT\nLicense: ignored"), location="m")
    assert record.licenses == ("MIT",)
    long_text = python.parse_metadata(
        metadata(
            "x",
            "1",
            "License: Permission is hereby granted\n        to anyone\n"
            "Classifier: License :: OSI Approved :: MIT License",
        ),
        location="m",
    )
    assert long_text.licenses == ("MIT",)


def test_an_egg_info_file() -> None:
    layer = (
        LayerBuilder()
        .file("usr/lib/python3.11/site-packages/six-1.16.0.egg-info", metadata("six", "1.16.0"))
        .layer("gzip")
    )
    catalog = catalog_image("sha256:" + "22" * 32, [layer])
    assert [(p.name, p.purl) for p in catalog.packages] == [("six", "pkg:pypi/six@1.16.0")]


# --- the documents -----------------------------------------------------------------------------


def test_cyclonedx_document(debian_image: ImageCatalog, debian_layers: list[Layer]) -> None:
    document = json.loads(cyclonedx_json(debian_image, image_name="registry.example:5000/team/app:1.0"))
    assert document["specVersion"] == "1.6"
    root = document["metadata"]["component"]
    assert (root["type"], root["name"], root["version"]) == (
        "container",
        "registry.example:5000/team/app:1.0",
        debian_image.image,
    )
    assert root["purl"] == f"pkg:oci/app@sha256:{'ab' * 32}?repository_url=registry.example:5000/team/app&tag=1.0"
    components = {c["bom-ref"]: c for c in document["components"]}
    os_component = [c for c in components.values() if c["type"] == "operating-system"]
    assert [(c["name"], c["version"]) for c in os_component] == [("debian", "12")]
    curl = components["pkg:deb/debian/libcurl4@7.88.1-10%2Bdeb12u5%2Bb1?arch=amd64&distro=debian-12"]
    assert sorted(item["license"]["id"] for item in curl["licenses"]) == ["MIT", "curl"]
    assert {p["name"]: p["value"] for p in curl["properties"]} == {
        LAYER_PROPERTY: digests(debian_layers)[0],
        LOCATION_PROPERTY: "var/lib/dpkg/status",
        SOURCE_PROPERTY: "curl@7.88.1-10+deb12u5",  # the source package Debian's advisories name
    }
    thing = components["pkg:npm/%40scope/thing@2.0.0"]
    assert thing["licenses"] == [{"expression": "(MIT OR Apache-2.0)"}]
    zope = components["pkg:pypi/zope-interface@6.0"]
    assert zope["licenses"] == [{"license": {"name": "Zope Public License"}}]
    # The Go modules appear once per binary: the same purl twice, told apart by location.
    assert "pkg:golang/stdlib@" + go_version() + "#usr/local/bin/app-link" in components
    assert len(document["components"]) == len(debian_image.packages) + 1


def test_spdx_document(debian_image: ImageCatalog) -> None:
    text = spdx_json(debian_image, image_name="registry.example/team/app:1.0")
    document = json.loads(text)
    assert document["spdxVersion"] == "SPDX-2.3"
    packages = {p["SPDXID"]: p for p in document["packages"]}
    assert len(packages) == len(debian_image.packages) + 2  # the image and the OS
    purls = {ref["referenceLocator"] for p in packages.values() for ref in p.get("externalRefs", [])}
    assert {p.purl for p in debian_image.packages} <= purls
    (described,) = [r["relatedSpdxElement"] for r in document["relationships"] if r["relationshipType"] == "DESCRIBES"]
    contained = {r["relatedSpdxElement"] for r in document["relationships"] if r["relationshipType"] == "CONTAINS"}
    assert contained == set(packages) - {described}
    by_name = {p["name"]: p for p in packages.values()}
    assert by_name["libcurl4"]["licenseDeclared"] == "curl AND MIT"
    assert by_name["libcurl4"]["licenseConcluded"] == "NOASSERTION"
    assert by_name["base-files"]["licenseDeclared"] == "NOASSERTION"
    assert by_name["Zope.Interface"]["licenseDeclared"] == "LicenseRef-Zope-Public-License"
    assert [(i["licenseId"], i["extractedText"]) for i in document["hasExtractedLicensingInfos"]] == [
        ("LicenseRef-Zope-Public-License", "Zope Public License")
    ]


def test_documents_are_deterministic_but_for_time_and_serial(debian_image: ImageCatalog) -> None:
    def stable_cyclonedx() -> dict[str, object]:
        document = json.loads(cyclonedx_json(debian_image, image_name="app"))
        document.pop("serialNumber")
        document["metadata"].pop("timestamp")
        return document

    def stable_spdx() -> dict[str, object]:
        document = json.loads(spdx_json(debian_image, image_name="app"))
        document.pop("documentNamespace")
        document["creationInfo"].pop("created")
        return document

    assert stable_cyclonedx() == stable_cyclonedx()
    assert stable_spdx() == stable_spdx()


# --- memory -----------------------------------------------------------------------------------

GIB = 1024 * 1024 * 1024


def big_layer_chunks() -> Iterator[bytes]:
    """A 1 GiB executable (which the Go reader scans end to end), a file over the content cap
    that an interest wants, and a few package records, as tar bytes made on the fly."""
    block = b"\x7fELF" + bytes(range(256)) * 4096
    block = block[: 1024 * 1024]
    yield (
        tar_member("usr/lib/os-release", len(DEBIAN_OS_RELEASE), 0o644)
        + DEBIAN_OS_RELEASE.encode()
        + padding(len(DEBIAN_OS_RELEASE))
    )
    yield tar_member("var/lib/dpkg/status", len(STATUS_1)) + STATUS_1.encode() + padding(len(STATUS_1))
    yield tar_member("usr/local/bin/huge", GIB, 0o755)
    for _ in range(GIB // len(block)):
        yield block
    rpmdb_size = 80 * 1024 * 1024
    yield tar_member("var/lib/rpm/rpmdb.sqlite", rpmdb_size)
    for _ in range(rpmdb_size // len(block)):
        yield block
    meta = metadata("idna", "3.3").encode()
    yield tar_member("usr/lib/python3/dist-packages/idna-3.3.dist-info/METADATA", len(meta)) + meta + padding(len(meta))
    yield b"\0" * 1024


def test_a_1_gib_layer_walks_in_flat_memory() -> None:
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        layer = ("sha256:" + "7" * 64, MEDIA_TYPES["none"], lambda: GeneratedStream(big_layer_chunks()))
        catalog = catalog_image("sha256:" + "8" * 64, [layer])  # type: ignore[list-item]
    finally:
        done.set()
        sampler.join()
    elapsed = time.monotonic() - started
    assert [(p.name, p.version) for p in catalog.packages] == [
        ("base-files", "12.4+deb12u5"),
        ("jq", "1.6-2.1"),
        ("libcurl4", "7.88.1-10+deb12u5+b1"),
        ("idna", "3.3"),
    ]
    assert catalog.unreadable == ["var/lib/rpm/rpmdb.sqlite: larger than the content cap"]
    assert catalog.layer_stats[0].uncompressed_size > GIB
    growth = (peak - baseline) / 1024 / 1024
    print(f"1 GiB layer: {elapsed:.1f} s, {GIB / elapsed / 1e6:.0f} MB/s, peak RSS growth {growth:.1f} MiB")
    assert growth < 50, f"the walk grew RSS by {growth:.1f} MiB"
