"""cargohold's SBOM of real images held to the package managers' own answers.

The images (tests/support/images.py) are made with umoci from the work of dpkg, pip, npm, go and
rpm; what those tools report for the same files is the truth. The first tests check the images
and their truth themselves (so a wrong oracle cannot pass an SBOM); the last drive `cargohold
sbom` as a user would, against the session's registry, in both formats."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import images
from tests.support.cli import CargoholdCLI
from tests.support.clients import layout_blob, run
from tests.support.images import BuiltImage
from tests.support.oracles import APK_INSTALLED, RPMDB
from tests.support.sbom_checks import check_cyclonedx, check_spdx
from tests.support.servers import Cargohold, require_tool

# Builds images from debootstrap, PyPI and npm (about a minute and a half the first time in a clone).
pytestmark = pytest.mark.slow

BUILDERS: dict[str, Callable[[], BuiltImage]] = {
    "debian": images.debian_image,
    "alpine": images.alpine_image,
    "rpm": images.rpm_image,
}


def layer_members(image: BuiltImage, index: int) -> list[str]:
    with tarfile.open(image.layout / "blobs" / "sha256" / image.layers[index].removeprefix("sha256:")) as layer:
        return layer.getnames()


def image_config(image: BuiltImage) -> dict[str, object]:
    manifest = json.loads(layout_blob(image.layout, image.digest))
    config: dict[str, object] = json.loads(layout_blob(image.layout, manifest["config"]["digest"]))["config"]
    return config


def by_name(image: BuiltImage, purl_type: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for component in image.of_type(purl_type):
        found.setdefault(component.name, []).append(component.version)
    return found


# --- the images and their truth -------------------------------------------------------------------------------------


def test_debian_image_layers_and_dpkg_truth() -> None:
    image = images.debian_image()
    assert len(image.layers) == 6
    debs = [[c.name for c in snapshot if c.type == "deb"] for snapshot in image.snapshots]
    assert images.REMOVED_DEB in debs[0]
    assert all(images.REMOVED_DEB not in names for names in debs[1:]), "dpkg-query still lists the purged package"
    assert [len(names) for names in debs] == [len(debs[0])] + [len(debs[0]) - 1] * 5
    assert [c.name for c in image.removed] == [images.REMOVED_DEB]

    # The purge is a real diff layer: the package's files and dpkg's records of it are whiteouts.
    removal = layer_members(image, 1)
    assert "var/lib/dpkg/info/.wh.python3-lib2to3.list" in removal
    assert "usr/lib/python3.11/lib2to3/.wh.__init__.py" in removal or "usr/lib/python3.11/.wh.lib2to3" in removal
    assert "var/lib/dpkg/status" in removal

    debian = {c.name: c for c in image.of_type("deb")}
    assert (debian["libc6"].source, debian["bash"].source, debian["bash"].source_version) == (
        "glibc",
        "bash",
        "5.2.15-2",
    ), "dpkg's Source field, binNMU version included"
    assert debian["coreutils"].source is None, "no Source field: the binary package is its own source"
    assert debian["bsdutils"].version.startswith("1:"), "versions keep their epoch"
    assert {c.layer for c in image.of_type("deb")} == {0}
    assert {c.record_layer for c in image.of_type("deb")} == {1}, "the purge rewrote the status file"
    assert image.distro["ID"] == "debian" and image.distro["VERSION_ID"] == "12"


def test_debian_image_language_packages_truth() -> None:
    image = images.debian_image()
    assert by_name(image, "pypi") == {pin.split("==")[0]: [pin.split("==")[1]] for pin in images.WHEELS}
    assert {c.layer for c in image.of_type("pypi")} == {2}

    npm = {(c.name, c.version): c.location for c in image.of_type("npm")}
    assert npm[("minimist", "0.0.10")] == "app/node_modules/optimist/node_modules/minimist/package.json"
    assert npm[("minimist", "1.2.5")] == "app/node_modules/minimist/package.json"
    assert ("@isaacs/string-locale-compare", "1.1.0") in npm and ("lodash", "4.17.20") in npm
    assert ("wordwrap", "0.0.3") in npm, "optimist's own dependency, which npm ls --all lists"
    assert {c.layer for c in image.of_type("npm")} == {3}

    go = {c.name: c for c in image.of_type("golang")}
    assert go[images.GO_MAIN].main_module and go[images.GO_MAIN].version == "(devel)"
    assert go["stdlib"].version == run([require_tool("go"), "env", "GOVERSION"]).stdout.strip().removeprefix("go")
    greeting = go["example.com/greeting"]
    assert (greeting.version, greeting.replaced_by) == ("(devel)", "example.com/greeting v1.2.3 => ./greeting (devel)")
    assert (go["example.com/quote"].version, go["example.com/quote"].replaced_by) == ("v1.5.2", None)
    assert len(go) == 4
    assert {c.location for c in go.values()} == {images.GO_BINARY}
    assert {c.layer for c in go.values()} == {4}


def test_debian_image_lint_findings_and_clean_variant() -> None:
    findings, clean = images.debian_image(), images.debian_image(clean=True)
    assert images.SETUID_FILE in findings.lint.setuid and "usr/bin/su" in findings.lint.setuid
    assert findings.lint.world_writable == (images.WORLD_WRITABLE_DIR,)
    assert findings.lint.private_keys == (images.PRIVATE_KEY_FILE,)
    assert findings.lint.secret_env == ("AWS_SECRET_ACCESS_KEY",)
    assert (findings.lint.user, findings.lint.healthcheck) == ("", False)
    key = (findings.rootfs / images.PRIVATE_KEY_FILE).read_text()
    assert key.startswith("-----BEGIN PRIVATE KEY-----")

    assert clean.layers[:5] == findings.layers[:5] and clean.layers[5] != findings.layers[5]
    assert clean.lint == images.LintTruth((), (), (), (), "1000", True)
    assert image_config(clean)["Healthcheck"] == {
        "Test": images.HEALTHCHECK,
        "Interval": 30_000_000_000,
        "Timeout": 5_000_000_000,
        "Retries": 3,
    }
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(image_config(clean))
    assert Counter(c.key for c in clean.components) == Counter(c.key for c in findings.components)


def test_alpine_image_apk_database() -> None:
    image = images.alpine_image()
    assert (image.distro["ID"], image.distro["VERSION_ID"]) == ("alpine", "3.19.1")
    apk = {c.name: c for c in image.of_type("apk")}
    assert {name: (c.version, c.source, c.license, c.layer) for name, c in apk.items()} == {
        "musl": ("1.2.4_git20230717-r4", "musl", "MIT", 0),
        "busybox": ("1.36.1-r15", "busybox", "GPL-2.0-only", 0),
        "busybox-binsh": ("1.36.1-r15", "busybox", "GPL-2.0-only", 0),
        "zlib": ("1.3.1-r0", "zlib", "Zlib", 1),
        "libcrypto3": ("3.1.4-r5", "openssl", "Apache-2.0", 1),
    }
    # Every file the database lists is in the root with the content hash its Z: line gives.
    directory, path = "", image.rootfs
    stanza_fields: list[str] = []
    for line in (image.rootfs / APK_INSTALLED).read_text().splitlines():
        key, _, value = line.partition(":")
        stanza_fields.append(key)
        if key == "F":
            directory = value
        elif key == "R":
            path = image.rootfs / directory / value
        elif key == "Z":
            content = path.readlink().as_posix().encode() if path.is_symlink() else path.read_bytes()
            assert value == images._q1(content), f"{path}: Z:{value}"
    assert set(stanza_fields) >= set("CPVASITULomtcpFRaZ") | {""}
    assert APK_INSTALLED in layer_members(image, 1), "the second layer rewrote the database"


def test_rpm_image_sqlite_rpmdb() -> None:
    image = images.rpm_image()
    assert (image.distro["ID"], image.distro["VERSION_ID"]) == ("almalinux", "9.3")
    assert (image.rootfs / RPMDB).stat().st_size > 0
    assert not (image.rootfs / "var/lib/rpm/Packages").exists(), "sqlite, not Berkeley DB"
    rpms = {c.name: c for c in image.of_type("rpm")}
    assert {name: (c.version, c.epoch, c.license, c.source, c.layer) for name, c in rpms.items()} == {
        "fixture-hello": ("1.2.3-1.el9", None, "MIT", "fixture-hello", 0),
        "fixture-data": ("0.9-4.el9", "2", "GPL-2.0-or-later", "fixture-data", 1),
    }
    # rpm itself agrees the files it recorded are in the root as recorded.
    verified = run([require_tool("rpm"), "--root", image.rootfs, "--dbpath", "/var/lib/rpm", "-V", *rpms])
    assert verified.stdout == ""


@pytest.mark.parametrize("name", list(BUILDERS))
def test_images_push_to_cargohold(name: str, cargohold: Cargohold, tmp_path: Path) -> None:
    image = BUILDERS[name]()
    cli = CargoholdCLI(tmp_path / "home")
    reference = images.push(image, cargohold, f"supply-fixtures/{name}", cli)
    assert cli.run("digest", reference).stdout.strip() == image.digest


# --- cargohold sbom against the truth -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pushed(cargohold: Cargohold, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cli = CargoholdCLI(tmp_path_factory.mktemp("sbom-push"))
    return {name: images.push(build(), cargohold, f"supply-sbom/{name}", cli) for name, build in BUILDERS.items()}


def sbom(reference: str, document_format: str, home: Path) -> str:
    return CargoholdCLI(home).run("sbom", reference, "--format", document_format).stdout


@pytest.mark.parametrize("name", list(BUILDERS))
def test_cyclonedx_sbom_is_what_the_package_managers_report(name: str, pushed: dict[str, str], tmp_path: Path) -> None:
    image = BUILDERS[name]()
    check_cyclonedx(sbom(pushed[name], "cyclonedx", tmp_path), image)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_spdx_sbom_is_what_the_package_managers_report(name: str, pushed: dict[str, str], tmp_path: Path) -> None:
    image = BUILDERS[name]()
    check_spdx(sbom(pushed[name], "spdx", tmp_path), image)
