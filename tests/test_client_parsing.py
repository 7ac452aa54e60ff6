"""The client's pure parsing in oci/: image references, locations, challenges, scopes, platforms."""

from __future__ import annotations

from pathlib import Path

import pytest

from cargohold.client.api import location
from cargohold.oci.challenge import merge_scopes, parse_challenge
from cargohold.oci.location import parse_location
from cargohold.oci.platform import Platform
from cargohold.oci.reference import ReferenceError, is_loopback, parse_reference, parse_registry

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("alpine", "docker.io", "library/alpine", None, None),
        ("alpine:3.20", "docker.io", "library/alpine", "3.20", None),
        ("team/app", "docker.io", "team/app", None, None),
        ("docker://127.0.0.1:5000/team/app:v1", "127.0.0.1:5000", "team/app", "v1", None),
        ("localhost/app", "localhost", "app", None, None),
        ("registry.example.com/a/b/c:v1", "registry.example.com", "a/b/c", "v1", None),
        (f"127.0.0.1:5000/app@{DIGEST}", "127.0.0.1:5000", "app", None, DIGEST),
        (f"127.0.0.1:5000/app:v1@{DIGEST}", "127.0.0.1:5000", "app", "v1", DIGEST),
        ("[::1]:5000/app:v2", "[::1]:5000", "app", "v2", None),
    ],
)
def test_references(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert ref.reference == (digest or tag or "latest")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("127.0.0.1:5000/Team/App", "invalid repository name"),
        ("127.0.0.1:5000/app:-x", "invalid tag"),
        ("127.0.0.1:5000/app@sha256:12", "invalid sha256 digest"),
        ("127.0.0.1:5000/app@md5:abcd", "unsupported digest algorithm"),
    ],
)
def test_bad_references(text: str, reason: str) -> None:
    with pytest.raises(ReferenceError, match=reason):
        parse_reference(text)


def test_with_reference_and_str() -> None:
    ref = parse_reference("127.0.0.1:5000/team/app:v1")
    assert str(ref.with_reference("v2")) == "127.0.0.1:5000/team/app:v2"
    assert ref.with_reference(DIGEST).digest == DIGEST and ref.with_reference(DIGEST).tag is None
    assert parse_reference("alpine").api_host == "registry-1.docker.io"


def test_registries_and_loopback() -> None:
    assert parse_registry("https://index.docker.io/v1/") == "docker.io"
    assert parse_registry("http://127.0.0.1:5000/") == "127.0.0.1:5000"
    assert [is_loopback(h) for h in ("127.0.0.1:5000", "127.9.9.9", "localhost:80", "[::1]:5000")] == [True] * 4
    assert [is_loopback(h) for h in ("10.0.0.1:5000", "registry.example.com", "example.com:443")] == [False] * 3


def test_locations() -> None:
    oci = parse_location("oci:/tmp/img:v1")
    assert (oci.transport, oci.path, oci.name) == ("oci", "/tmp/img", "v1")
    assert parse_location("oci:/tmp/img").name is None
    assert parse_location("oci:/tmp/a:b/img").path == "/tmp/a:b/img", "a colon in a directory is not a tag"
    archive = parse_location("docker-archive:/tmp/app.tar:team/app:v1")
    assert (archive.transport, archive.path, archive.name) == ("docker-archive", "/tmp/app.tar", "team/app:v1")
    assert parse_location("img", default="oci").path == "img"
    registry = parse_location("docker://127.0.0.1:5000/app:v1")
    assert registry.transport == "registry" and registry.reference is not None and registry.reference.tag == "v1"
    with pytest.raises(ValueError, match="needs a path"):
        parse_location("oci:")


def test_challenges_and_scopes() -> None:
    bearer = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/app:pull,push",error="insufficient_scope"'
    )
    assert bearer.scheme == "bearer"
    assert bearer.params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:team/app:pull,push",
        "error": "insufficient_scope",
    }
    assert parse_challenge('Basic realm="basic-realm"').params == {"realm": "basic-realm"}
    assert parse_challenge('Bearer realm="a\\"b"').params["realm"] == 'a"b'
    assert merge_scopes("repository:a:push", "repository:a:pull", "repository:b:pull", "") == (
        "repository:a:pull,push",
        "repository:b:pull",
    )
    assert merge_scopes("registry:catalog:*") == ("registry:catalog:*",)


def test_platforms() -> None:
    assert Platform.parse("linux/arm/v7") == Platform("linux", "arm", "v7")
    assert Platform.parse("linux/amd64").matches(Platform("linux", "amd64", "v2"))
    assert not Platform.parse("linux/arm/v6").matches(Platform("linux", "arm", "v7"))
    assert Platform.from_descriptor({"os": "linux", "architecture": "s390x"}) == Platform("linux", "s390x")
    assert Platform.from_descriptor(None) is None
    for bad in ("linux", "linux/", "a/b/c/d"):
        with pytest.raises(ValueError, match="os/architecture"):
            Platform.parse(bad)


def test_bare_locations(tmp_path: Path) -> None:
    """copy/inspect/digest read a bare string as an image unless it is a file, a directory or a .tar;
    push's source and pull's destination (`local`) read it as a path unless it names a registry host."""
    assert location("alpine").reference == parse_reference("alpine")
    assert location("team/app:v1").transport == "registry"
    assert location(f"127.0.0.1:5000/{tmp_path.name}:v1").transport == "registry"
    assert (location("app.tar").transport, location("app.tar").path) == ("docker-archive", "app.tar")
    assert (location(str(tmp_path)).transport, location(str(tmp_path)).path) == ("oci", str(tmp_path))
    out = location("out", local=True)
    assert (out.transport, out.path, out.name) == ("oci", "out", None)
    tagged = location("./out:v1", local=True)
    assert (tagged.transport, tagged.path, tagged.name) == ("oci", "./out", "v1")
    assert location("127.0.0.1:5000/a/b:v1", local=True).transport == "registry"
    assert location("registry.example.com/a/b", local=True).transport == "registry"
    assert location("oci:127.0.0.1:5000/x").transport == "oci"
