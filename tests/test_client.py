"""The cargohold client against ours and Debian's docker-registry: round trips of images made by
umoci, skopeo and `docker build`/`docker save`, multi-arch copies, and agreement with skopeo."""

from __future__ import annotations

import json
import os
import tarfile
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.cli import CargoholdCLI
from tests.support.clients import (
    OCI_INDEX,
    ContainersTools,
    Dockerd,
    add_platform_variant,
    build_index,
    build_umoci_image,
    fetch_manifest,
    hello_context,
    layout_blob,
    layout_digest,
    registry_digest,
    repository,
    sha256,
)
from tests.support.servers import Cargohold, Distribution, ServerProcess
from tests.test_clients import write_docker_context

# Real engines, kill -9 loops or whole benchmark runs: not in the fast lane (make test-fast).
pytestmark = pytest.mark.slow


def unique(prefix: str) -> str:
    return f"client/{prefix}-{uuid.uuid4().hex[:10]}"


def nonce() -> bytes:
    return uuid.uuid4().hex.encode()


@pytest.fixture
def ch(tmp_path: Path) -> CargoholdCLI:
    return CargoholdCLI(tmp_path / "home")


def small_image(layout: Path, tag: str, size: int = 200_000) -> str:
    return build_umoci_image(
        layout, tag, [{"a.txt": b"zero " + nonce()}, {"b.bin": os.urandom(size), "c.txt": b"two " + nonce()}]
    )


def layout_blobs_match(layout: Path, digest: str) -> list[str]:
    """Every blob of the image in the layout is present and hashes to its name; returns the layer digests."""
    manifest = json.loads(layout_blob(layout, digest))
    for blob in [manifest["config"], *manifest["layers"]]:
        assert sha256(layout_blob(layout, blob["digest"])) == blob["digest"]
    return [layer["digest"] for layer in manifest["layers"]]


def no_temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def test_umoci_layout_round_trip(ch: CargoholdCLI, any_registry: ServerProcess, tmp_path: Path) -> None:
    layout = tmp_path / "img"
    digest = small_image(layout, "v1")
    ref = f"{repository(any_registry, unique('umoci'))}:v1"

    pushed = ch.json("push", f"oci:{layout}:v1", ref)
    assert pushed["digest"] == digest
    assert pushed["blobs"] == {"transferred": 3, "skipped": 0, "mounted": 0}
    assert registry_digest(any_registry, ref.split("/", 1)[1].rsplit(":", 1)[0], "v1") == digest
    again = ch.json("push", f"oci:{layout}:v1", ref)
    assert again["blobs"] == {"transferred": 0, "skipped": 3, "mounted": 0}, "HEAD first: nothing is sent twice"

    out = tmp_path / "out"
    assert ch.run("pull", "-q", ref, f"oci:{out}:got").stdout.strip() == digest
    assert layout_digest(out, "got") == digest
    assert layout_blob(out, digest) == layout_blob(layout, digest), "the manifest comes back byte for byte"
    layout_blobs_match(out, digest)
    assert ch.run("digest", ref).stdout.strip() == digest
    assert ch.run("digest", f"oci:{out}:got").stdout.strip() == digest
    assert not no_temp_files(out)


def test_skopeo_made_image_and_inspect_agree(
    ch: CargoholdCLI, containers: ContainersTools, any_registry: ServerProcess, tmp_path: Path
) -> None:
    layout = tmp_path / "img"
    digest = small_image(layout, "v1")
    repo = unique("skopeo")
    ref = f"{repository(any_registry, repo)}:v1"
    containers.skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{ref}")

    ours = ch.json("inspect", ref)
    theirs = json.loads(containers.skopeo("inspect", "--tls-verify=false", f"docker://{ref}").stdout)
    assert ours["digest"] == theirs["Digest"] == digest
    assert [layer["digest"] for layer in ours["layers"]] == theirs["Layers"]
    assert (ours["config"]["os"], ours["config"]["architecture"]) == (theirs["Os"], theirs["Architecture"])
    raw = ch.run("inspect", "--raw", ref).stdout.encode()
    assert raw == containers.skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout.encode()
    config = ch.run("inspect", "--config", ref).stdout.encode()
    assert sha256(config) == ours["config"]["digest"]
    text = ch.run("inspect", ref).stdout
    assert digest in text and "linux/amd64" in text

    # what we push, skopeo pulls; what skopeo pushed, we pull
    out = tmp_path / "ours"
    ch.run("pull", ref, f"oci:{out}:v1")
    assert layout_digest(out, "v1") == digest
    ref2 = f"{repository(any_registry, repo)}:v2"
    ch.run("push", f"oci:{out}:v1", ref2)
    back = tmp_path / "skopeo-out"
    containers.skopeo("copy", "--src-tls-verify=false", f"docker://{ref2}", f"oci:{back}:v2")
    assert layout_digest(back, "v2") == digest
    layout_blobs_match(back, digest)


def test_multiarch_index_copy_all_between_registries(
    ch: CargoholdCLI, containers: ContainersTools, cargohold: Cargohold, distribution: Distribution, tmp_path: Path
) -> None:
    layout = tmp_path / "img"
    amd64 = small_image(layout, "v1")
    arm64 = add_platform_variant(layout, "v1", "v1-arm64", "arm64")
    index = build_index(layout, "multi", ["v1", "v1-arm64"])
    repo = unique("multi")
    for registry in (cargohold, distribution):
        ch.run("push", "--all", f"oci:{layout}:multi", f"{repository(registry, repo)}:multi")
        assert registry_digest(registry, repo, "multi") == index
    # registry to registry both ways, under new names
    ours, theirs = f"{repository(cargohold, repo)}:multi", f"{repository(distribution, repo + '-c')}:copied"
    copied = ch.json("copy", "--all", ours, theirs)
    assert copied["digest"] == index and copied["manifests"][-1] == index and len(copied["manifests"]) == 3
    back = f"{repository(cargohold, repo + '-back')}:returned"
    ch.run("copy", "--all", theirs, back)
    for registry, name, tag in ((distribution, repo + "-c", "copied"), (cargohold, repo + "-back", "returned")):
        response = fetch_manifest(registry, name, tag)
        assert sha256(response.content) == index and response.headers["content-type"] == OCI_INDEX
        assert registry_digest(registry, name, amd64) == amd64
        assert registry_digest(registry, name, arm64) == arm64

    # platforms agree with skopeo's view of the index
    info = ch.json("inspect", back)
    raw = json.loads(containers.skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{back}").stdout)
    assert [(p["platform"], p["digest"]) for p in info["platforms"]] == [
        (f"{m['platform']['os']}/{m['platform']['architecture']}", m["digest"]) for m in raw["manifests"]
    ]
    arm = ch.json("inspect", "--platform", "linux/arm64", back)
    skopeo_arm = json.loads(
        containers.skopeo("inspect", "--override-arch", "arm64", "--tls-verify=false", f"docker://{back}").stdout
    )
    assert arm["image"] == arm64 and arm["config"]["architecture"] == skopeo_arm["Architecture"] == "arm64"
    assert [layer["digest"] for layer in arm["layers"]] == skopeo_arm["Layers"]

    # without --all one platform is picked; with --all the index is kept whole in a layout
    single = tmp_path / "single"
    assert ch.run("pull", "-q", "--platform", "linux/arm64", back, f"oci:{single}:arm").stdout.strip() == arm64
    assert ch.run("pull", "-q", back, f"oci:{single}:host").stdout.strip() == amd64
    whole = tmp_path / "whole"
    ch.run("pull", "--all", back, f"oci:{whole}:multi")
    assert layout_digest(whole, "multi") == index
    assert layout_blob(whole, index) == layout_blob(layout, index)
    for child in (amd64, arm64):
        layout_blobs_match(whole, child)
    missing = ch.fails("pull", "--platform", "linux/s390x", back, f"oci:{tmp_path / 'none'}:x")
    assert "linux/s390x" in missing and "linux/arm64" in missing


def test_docker_save_push_pull_load_run(
    ch: CargoholdCLI, dockerd: Dockerd, any_registry: ServerProcess, tmp_path: Path
) -> None:
    local = f"cargohold-client-test/{uuid.uuid4().hex[:10]}:v1"
    expected = write_docker_context(tmp_path / "ctx")
    dockerd.run("build", "--network", "host", "-t", local, tmp_path / "ctx")
    saved = tmp_path / "saved.tar"
    dockerd.run("save", "-o", saved, local)
    image_id = dockerd.run("image", "inspect", "--format", "{{.Id}}", local).stdout.strip()

    repo = unique("docker")
    ref = f"{repository(any_registry, repo)}:v1"
    pushed = ch.json("push", saved, ref)
    manifest = fetch_manifest(any_registry, repo, "v1").json()
    assert manifest["config"]["digest"] == image_id, "the config is pushed byte for byte"
    assert pushed["digest"] == registry_digest(any_registry, repo, "v1")

    # docker pulls what we pushed and runs it
    dockerd.run("rmi", local)
    dockerd.run("pull", ref)
    out = dockerd.run("run", "--rm", "--network", "host", ref, "/bin/busybox", "cat", "/hello.txt").stdout
    assert out.encode() == expected["/hello.txt"]
    dockerd.run("rmi", ref)

    # we pull to a tarball; docker load takes it and the container runs
    tarball = tmp_path / "pulled.tar"
    ch.run("pull", ref, tarball)
    with tarfile.open(tarball) as tar:
        assert "manifest.json" in tar.getnames()
    assert not no_temp_files(tmp_path)
    loaded = dockerd.run("load", "-i", tarball).stdout
    assert ref in loaded, loaded
    assert dockerd.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip() == image_id
    for path, content in expected.items():
        out = dockerd.run("run", "--rm", "--network", "host", ref, "/bin/busybox", "cat", path).stdout
        assert out.encode() == content, path
    dockerd.run("rmi", ref)


def test_tag_ls_rm(ch: CargoholdCLI, any_registry: ServerProcess, tmp_path: Path) -> None:
    layout = tmp_path / "img"
    digest = small_image(layout, "v1", size=1000)
    repo = unique("tags")
    base = repository(any_registry, repo)
    ch.run("push", f"oci:{layout}:v1", f"{base}:v1")
    tagged = ch.json("tag", f"{base}:v1", "v2", "stable")
    assert tagged["digest"] == digest
    assert ch.json("ls", base)["names"] == ["stable", "v1", "v2"]
    assert repo in ch.run("ls", any_registry.host).stdout.split()
    assert registry_digest(any_registry, repo, "stable") == digest

    if any_registry.kind == "cargohold":
        ch.run("rm", f"{base}:v2")
        assert ch.json("ls", base)["names"] == ["stable", "v1"]
    else:  # Distribution 2.8 cannot delete a tag alone: a clear refusal
        assert "v2" in ch.fails("rm", f"{base}:v2")
    ch.run("rm", f"{base}@{digest}")
    assert "not found" in ch.fails("inspect", f"{base}:v1")


def test_artifact_push_and_copy_with_referrers(ch: CargoholdCLI, cargohold: Cargohold, tmp_path: Path) -> None:
    """Distribution 2.8 has no referrers API, so referrers are shown on cargohold."""
    layout = tmp_path / "img"
    digest = small_image(layout, "v1", size=1000)
    repo = unique("art")
    base = repository(cargohold, repo)
    ch.run("push", f"oci:{layout}:v1", f"{base}:v1")
    sbom = tmp_path / "sbom.json"
    sbom.write_bytes(json.dumps({"bom": uuid.uuid4().hex}).encode())
    pushed = ch.json(
        "push", "--artifact-type", "application/vnd.test.sbom", "--file-type", "application/json",
        "--annotation", "org.example=yes", "--subject", "v1", sbom, base,
    )  # fmt: skip
    artifact = fetch_manifest(cargohold, repo, pushed["digest"]).json()
    assert artifact["artifactType"] == "application/vnd.test.sbom"
    assert artifact["subject"]["digest"] == digest
    assert artifact["layers"][0]["annotations"]["org.opencontainers.image.title"] == "sbom.json"
    info = ch.json("inspect", f"{base}@{pushed['digest']}")
    assert info["artifactType"] == "application/vnd.test.sbom" and info["annotations"] == {"org.example": "yes"}

    copied = ch.json("copy", "--referrers", f"{base}:v1", f"{repository(cargohold, repo + '-copy')}:v1")
    assert copied["referrers"] == [pushed["digest"]]
    # config + 2 layers, then the artifact's empty config + file: same registry, so all mounted, none re-sent
    assert copied["blobs"] == {"transferred": 0, "skipped": 0, "mounted": 5}
    assert registry_digest(cargohold, repo + "-copy", pushed["digest"]) == pushed["digest"]


def test_podman_save_push_pull_load_run(
    ch: CargoholdCLI, containers: ContainersTools, any_registry: ServerProcess, tmp_path: Path
) -> None:
    hello = b"hello from podman save " + nonce()
    context = hello_context(tmp_path / "ctx", hello)
    local = f"localhost/{unique('podman-save')}:v1"
    containers.podman("build", "--isolation", "chroot", "-t", local, "-f", context / "Containerfile", context)
    saved = tmp_path / "saved.tar"
    containers.podman("save", "-o", saved, local)
    image_id = containers.podman("image", "inspect", "--format", "{{.Id}}", local).stdout.strip()

    repo = unique("podman")
    ref = f"{repository(any_registry, repo)}:v1"
    ch.run("push", f"docker-archive:{saved}", ref)
    assert fetch_manifest(any_registry, repo, "v1").json()["config"]["digest"] == f"sha256:{image_id}"

    tarball = tmp_path / "pulled.tar"
    ch.run("pull", ref, tarball)
    containers.podman("rmi", local)
    containers.podman("load", "-i", tarball)
    out = containers.podman("run", "--rm", "--network", "host", ref).stdout
    assert out.encode() == hello
    containers.podman("rmi", ref)


def test_referrers_through_a_registry_without_the_api(
    ch: CargoholdCLI, cargohold: Cargohold, distribution: Distribution, tmp_path: Path
) -> None:
    """Distribution 2.8 has no referrers API: the client keeps the spec's `sha256-<hex>` tag index there,
    so referrers survive a copy to it and back."""
    layout = tmp_path / "img"
    digest = small_image(layout, "v1", size=1000)
    repo = unique("fallback")
    ours = repository(cargohold, repo)
    ch.run("push", f"oci:{layout}:v1", f"{ours}:v1")
    note = tmp_path / "note.txt"
    note.write_text("signed " + uuid.uuid4().hex)
    referrer = ch.json("push", "--artifact-type", "application/vnd.test.note", "--subject", "v1", note, ours)["digest"]

    theirs = f"{repository(distribution, repo)}:v1"
    assert ch.json("copy", "--referrers", f"{ours}:v1", theirs)["referrers"] == [referrer]
    fallback = fetch_manifest(distribution, repo, digest.replace(":", "-")).json()
    assert [(m["digest"], m["artifactType"]) for m in fallback["manifests"]] == [
        (referrer, "application/vnd.test.note")
    ]
    back = f"{repository(cargohold, repo + '-back')}:v1"
    assert ch.json("copy", "--referrers", theirs, back)["referrers"] == [referrer]
    listed = httpx.get(f"{cargohold.url}/v2/{repo}-back/referrers/{digest}").json()
    assert [m["digest"] for m in listed["manifests"]] == [referrer]
