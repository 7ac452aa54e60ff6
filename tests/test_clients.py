"""Real clients (docker, skopeo, podman, oras-py, python-dxf) against cargohold and, as a check, Distribution 2.8.

Every round trip compares digests computed here with what the client and the registry report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import httpx
import oras.client
import oras.oci
import pytest
from dxf import DXF

from tests.support.clients import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
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
    static_busybox,
)
from tests.support.servers import Cargohold, Distribution, ServerProcess

# Real engines, kill -9 loops or whole benchmark runs: not in the fast lane (make test-fast).
pytestmark = pytest.mark.slow

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


def unique(prefix: str) -> str:
    """The servers live for the whole session, so every test writes to repositories of its own."""
    return f"interop/{prefix}-{uuid.uuid4().hex[:10]}"


def nonce() -> bytes:
    return uuid.uuid4().hex.encode()


def two_layer_image(layout: Path, tag: str) -> str:
    return build_umoci_image(
        layout,
        tag,
        [{"a.txt": b"layer zero " + nonce()}, {"b.txt": b"layer one " + nonce(), "c.bin": os.urandom(4096)}],
    )


# --- docker engine -------------------------------------------------------------------------------------------------


def write_docker_context(context: Path) -> dict[str, bytes]:
    """A FROM-scratch build whose RUN works because busybox is copied in first; returns files to check later."""
    context.mkdir()
    shutil.copy(static_busybox(), context / "busybox")
    files = {"hello.txt": b"hello from the build " + nonce(), "extra.txt": b"second file " + nonce()}
    for name, content in files.items():
        (context / name).write_bytes(content)
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "COPY hello.txt /hello.txt\n"
        "ADD extra.txt /data/extra.txt\n"
        'RUN ["/bin/sh", "-c", "echo built-by-run > /data/built.txt"]\n'
        'CMD ["/bin/busybox", "cat", "/hello.txt"]\n'
    )
    return {
        "/hello.txt": files["hello.txt"],
        "/data/extra.txt": files["extra.txt"],
        "/data/built.txt": b"built-by-run\n",
    }


def repo_digests(dockerd: Dockerd, image: str) -> list[str]:
    return json.loads(dockerd.run("image", "inspect", "--format", "{{json .RepoDigests}}", image).stdout)


def test_docker_build_push_pull_run(dockerd: Dockerd, any_registry: ServerProcess, tmp_path: Path) -> None:
    repo = unique("docker")
    image = f"{repository(any_registry, repo)}:v1"
    expected = write_docker_context(tmp_path / "ctx")
    # the engine runs with --bridge=none, so build steps need the host network
    dockerd.run("build", "--network", "host", "-t", image, tmp_path / "ctx")
    image_id = dockerd.run("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()

    pushed = dockerd.run("push", image).stdout
    found = re.search(r"digest: (sha256:[0-9a-f]{64}) size: (\d+)", pushed)
    assert found, f"no digest in docker push output:\n{pushed}"
    digest, size = found[1], int(found[2])

    manifest = fetch_manifest(any_registry, repo, "v1")
    assert sha256(manifest.content) == digest
    assert len(manifest.content) == size
    assert manifest.headers["content-type"] == DOCKER_MANIFEST
    body = manifest.json()
    assert body["config"]["digest"] == image_id, "the image ID of a v2s2 image is its config digest"
    assert len(body["layers"]) >= 4, "busybox, two RUNs, COPY and ADD each make a layer"
    assert f"{repository(any_registry, repo)}@{digest}" in repo_digests(dockerd, image)

    dockerd.run("rmi", image)
    assert dockerd.run("image", "inspect", image, check=False).returncode != 0

    pulled = dockerd.run("pull", image).stdout
    assert f"Digest: {digest}" in pulled, pulled
    assert repo_digests(dockerd, image) == [f"{repository(any_registry, repo)}@{digest}"]
    assert dockerd.run("image", "inspect", "--format", "{{.Id}}", image).stdout.strip() == image_id

    for path, content in expected.items():
        out = dockerd.run("run", "--rm", "--network", "host", image, "/bin/busybox", "cat", path).stdout
        assert out.encode() == content, path
    default_cmd = dockerd.run("run", "--rm", "--network", "host", image).stdout
    assert default_cmd.encode() == expected["/hello.txt"]

    # by digest too, the way deploy tooling pins images
    by_digest = f"{repository(any_registry, repo)}@{digest}"
    dockerd.run("rmi", image)
    dockerd.run("pull", by_digest)
    assert dockerd.run("image", "inspect", "--format", "{{.Id}}", by_digest).stdout.strip() == image_id
    dockerd.run("rmi", by_digest)


# --- skopeo --------------------------------------------------------------------------------------------------------


def test_skopeo_image_in_and_out(containers: ContainersTools, any_registry: ServerProcess, tmp_path: Path) -> None:
    layout = tmp_path / "img"
    digest = two_layer_image(layout, "v1")
    repo = unique("skopeo")
    ref = f"docker://{repository(any_registry, repo)}:v1"

    containers.skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", ref)
    assert registry_digest(any_registry, repo, "v1") == digest
    raw = containers.skopeo("inspect", "--raw", "--tls-verify=false", ref).stdout.encode()
    assert raw == layout_blob(layout, digest), "the manifest must come back byte for byte"
    (tmp_path / "raw.json").write_bytes(raw)
    assert containers.skopeo("manifest-digest", tmp_path / "raw.json").stdout.strip() == digest
    inspected = json.loads(containers.skopeo("inspect", "--tls-verify=false", ref).stdout)
    assert inspected["Digest"] == digest
    manifest = json.loads(raw)
    assert inspected["Layers"] == [layer["digest"] for layer in manifest["layers"]]
    config = containers.skopeo("inspect", "--config", "--raw", "--tls-verify=false", ref).stdout.encode()
    assert sha256(config) == manifest["config"]["digest"]

    out = tmp_path / "out"
    containers.skopeo("copy", "--src-tls-verify=false", ref, f"oci:{out}:pulled")
    assert layout_digest(out, "pulled") == digest
    for layer in manifest["layers"]:
        assert sha256(layout_blob(out, layer["digest"])) == layer["digest"]


def test_skopeo_multiarch_index(containers: ContainersTools, any_registry: ServerProcess, tmp_path: Path) -> None:
    layout = tmp_path / "img"
    amd64 = two_layer_image(layout, "v1")
    arm64 = add_platform_variant(layout, "v1", "v1-arm64", "arm64")
    index = build_index(layout, "multi", ["v1", "v1-arm64"])
    repo = unique("multi")
    ref = f"docker://{repository(any_registry, repo)}:multi"

    containers.skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:multi", ref)
    response = fetch_manifest(any_registry, repo, "multi")
    assert sha256(response.content) == index
    assert response.headers["content-type"] == OCI_INDEX
    assert registry_digest(any_registry, repo, amd64) == amd64
    assert registry_digest(any_registry, repo, arm64) == arm64
    picked = json.loads(containers.skopeo("inspect", "--override-arch", "arm64", "--tls-verify=false", ref).stdout)
    # inspect reports the digest of what the reference names (the index) and the chosen platform's config
    assert (picked["Digest"], picked["Architecture"]) == (index, "arm64")
    single = tmp_path / "single"
    containers.skopeo("--override-arch", "arm64", "copy", "--src-tls-verify=false", ref, f"oci:{single}:arm64")
    containers.skopeo("copy", "--src-tls-verify=false", ref, f"oci:{single}:host")
    assert (layout_digest(single, "arm64"), layout_digest(single, "host")) == (arm64, amd64)

    out = tmp_path / "out"
    containers.skopeo("copy", "--all", "--src-tls-verify=false", ref, f"oci:{out}:multi")
    assert layout_digest(out, "multi") == index
    assert layout_blob(out, index) == layout_blob(layout, index)
    assert {m["digest"] for m in json.loads(layout_blob(out, index))["manifests"]} == {amd64, arm64}


def test_skopeo_registry_to_registry(
    containers: ContainersTools, cargohold: Cargohold, distribution: Distribution, tmp_path: Path
) -> None:
    layout = tmp_path / "img"
    two_layer_image(layout, "v1")
    add_platform_variant(layout, "v1", "v1-arm64", "arm64")
    index = build_index(layout, "multi", ["v1", "v1-arm64"])
    repo = unique("r2r")
    tls = ["--src-tls-verify=false", "--dest-tls-verify=false"]

    ours = f"docker://{repository(cargohold, repo)}:multi"
    containers.skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:multi", ours)
    theirs = f"docker://{repository(distribution, repo)}:copied"
    containers.skopeo("copy", "--all", *tls, ours, theirs)
    assert registry_digest(distribution, repo, "copied") == index
    back = f"docker://{repository(cargohold, repo + '-back')}:returned"
    containers.skopeo("copy", "--all", *tls, theirs, back)
    assert registry_digest(cargohold, repo + "-back", "returned") == index
    for manifest in json.loads(layout_blob(layout, index))["manifests"]:
        assert registry_digest(cargohold, repo + "-back", manifest["digest"]) == manifest["digest"]


def test_skopeo_list_tags_and_delete(containers: ContainersTools, any_registry: ServerProcess, tmp_path: Path) -> None:
    layout = tmp_path / "img"
    first = two_layer_image(layout, "v1")
    second = two_layer_image(layout, "v2")
    repo = unique("tags")
    base = f"docker://{repository(any_registry, repo)}"
    for tag in ("v1", "v2"):
        containers.skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:{tag}", f"{base}:{tag}")
    containers.skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v2", f"{base}:latest")

    def tags() -> list[str]:
        return json.loads(containers.skopeo("list-tags", "--tls-verify=false", base).stdout)["Tags"]

    assert sorted(tags()) == ["latest", "v1", "v2"]
    # skopeo deletes by the manifest digest the tag resolves to
    containers.skopeo("delete", "--tls-verify=false", f"{base}:v1")
    assert sorted(tags()) == ["latest", "v2"]
    gone = containers.skopeo("inspect", "--tls-verify=false", f"{base}:v1", check=False)
    assert gone.returncode != 0 and "manifest unknown" in gone.stderr.lower(), gone.stderr
    by_digest = httpx.get(f"{any_registry.url}/v2/{repo}/manifests/{first}", headers={"accept": OCI_MANIFEST})
    assert by_digest.status_code == 404
    assert registry_digest(any_registry, repo, "v2") == second
    assert registry_digest(any_registry, repo, "latest") == second


# --- podman --------------------------------------------------------------------------------------------------------


def test_podman_push_pull(containers: ContainersTools, any_registry: ServerProcess, tmp_path: Path) -> None:
    hello = b"hello from podman " + nonce()
    context = hello_context(tmp_path / "ctx", hello)
    local = f"localhost/{unique('podman-local')}:v1"
    containers.podman("build", "--isolation", "chroot", "-t", local, "-f", context / "Containerfile", context)

    repo = unique("podman")
    remote = f"{repository(any_registry, repo)}:v1"
    digest_file = tmp_path / "digest"
    containers.podman("push", "--tls-verify=false", "--digestfile", digest_file, local, f"docker://{remote}")
    digest = digest_file.read_text().strip()
    assert DIGEST.fullmatch(digest), digest
    assert registry_digest(any_registry, repo, "v1") == digest

    containers.podman("rmi", local)
    containers.podman("pull", "--tls-verify=false", remote)
    assert containers.podman("image", "inspect", "--format", "{{.Digest}}", remote).stdout.strip() == digest
    repo_digests = json.loads(containers.podman("image", "inspect", "--format", "{{json .RepoDigests}}", remote).stdout)
    assert f"{repository(any_registry, repo)}@{digest}" in repo_digests
    out = containers.podman("run", "--rm", "--network", "host", remote).stdout
    assert out.encode() == hello
    containers.podman("rmi", remote)


# --- oras-py -------------------------------------------------------------------------------------------------------

ARTIFACT_CONFIG = "application/vnd.cargohold.test.config.v1+json"
SBOM_TYPE = "application/vnd.cargohold.test.sbom.v1+json"
SIGNATURE_TYPE = "application/vnd.cargohold.test.signature.v1"


def oras_client(registry: ServerProcess) -> oras.client.OrasClient:
    return oras.client.OrasClient(hostname=registry.host, insecure=True)


def push_artifact(registry: ServerProcess, repo: str, workdir: Path) -> tuple[str, dict[str, bytes]]:
    """An oras artifact of two files; its type is the config media type, as oras-py sets no artifactType field."""
    workdir.mkdir()
    files = {"readme.md": b"# artifact\n" + nonce(), "data.bin": os.urandom(10_000)}
    for name, content in files.items():
        (workdir / name).write_bytes(content)
    config = workdir / "config.json"
    config.write_bytes(json.dumps({"built": uuid.uuid4().hex}).encode())
    response = oras_client(registry).push(
        target=f"{repository(registry, repo)}:artifact",
        files=[f"{workdir / 'readme.md'}:text/markdown", f"{workdir / 'data.bin'}"],
        manifest_config=f"{config}:{ARTIFACT_CONFIG}",
        manifest_annotations={"org.opencontainers.image.description": "interop artifact"},
        disable_path_validation=True,
        quiet=True,
    )
    assert response.status_code == 201, response.text
    return response.headers["docker-content-digest"], files


def test_oras_artifact_round_trip(any_registry: ServerProcess, tmp_path: Path) -> None:
    repo = unique("oras")
    digest, files = push_artifact(any_registry, repo, tmp_path / "in")
    response = fetch_manifest(any_registry, repo, "artifact")
    assert sha256(response.content) == digest
    manifest = response.json()
    assert manifest["config"]["mediaType"] == ARTIFACT_CONFIG
    assert manifest["annotations"]["org.opencontainers.image.description"] == "interop artifact"
    assert [layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]] == list(files)
    assert manifest["layers"][0]["mediaType"] == "text/markdown"

    client = oras_client(any_registry)
    assert client.get_tags(f"{repository(any_registry, repo)}") == ["artifact"]
    pulled = client.pull(target=f"{repository(any_registry, repo)}:artifact", outdir=str(tmp_path / "out"))
    assert sorted(Path(p).name for p in pulled) == sorted(files)
    for name, content in files.items():
        assert (tmp_path / "out" / name).read_bytes() == content, name
    by_digest = client.get_manifest(f"{repository(any_registry, repo)}@{digest}")
    assert by_digest == manifest


def test_oras_referrers(cargohold: Cargohold, tmp_path: Path) -> None:
    """Distribution 2.8 has no referrers API, so this runs against cargohold only."""
    repo = unique("referrers")
    subject_digest, _ = push_artifact(cargohold, repo, tmp_path / "subject")
    subject_body = fetch_manifest(cargohold, repo, subject_digest).content
    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=subject_digest, size=len(subject_body))
    client = oras_client(cargohold)
    container = client.get_container(f"{repository(cargohold, repo)}:unused")

    # a signature with an explicit artifactType: oras uploads the blobs, httpx the manifest, to see its headers
    signature = tmp_path / "signature.sig"
    signature.write_bytes(b"signed " + nonce())
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"{}")
    layer = oras.oci.NewLayer(str(signature), media_type="application/octet-stream")
    empty_descriptor = {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2}
    for path, descriptor in ((signature, layer), (empty, empty_descriptor)):
        uploaded = client.upload_blob(str(path), container, descriptor)
        assert uploaded.status_code in (201, 200), uploaded.text
    signature_manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIGNATURE_TYPE,
        "config": empty_descriptor,
        "layers": [{"mediaType": layer["mediaType"], "digest": layer["digest"], "size": layer["size"]}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject_body)},
        "annotations": {"org.example.signer": "interop-test"},
    }).encode()  # fmt: skip
    put = httpx.put(
        f"{cargohold.url}/v2/{repo}/manifests/{sha256(signature_manifest)}",
        content=signature_manifest,
        headers={"content-type": OCI_MANIFEST},
    )
    assert put.status_code == 201, put.text
    assert put.headers.get("oci-subject") == subject_digest, dict(put.headers)
    signature_digest = sha256(signature_manifest)

    # an SBOM pushed by oras itself with `subject`; with no artifactType field its type is the config media type
    sbom = tmp_path / "sbom"
    sbom.mkdir()
    (sbom / "sbom.json").write_bytes(json.dumps({"packages": [uuid.uuid4().hex]}).encode())
    pushed = client.push(
        target=f"{repository(cargohold, repo)}:sbom",
        files=[f"{sbom / 'sbom.json'}:application/json"],
        manifest_config=f"/dev/null:{SBOM_TYPE}",
        subject=subject,
        disable_path_validation=True,
        quiet=True,
    )
    assert pushed.status_code == 201, pushed.text
    assert pushed.headers.get("oci-subject") == subject_digest, dict(pushed.headers)
    sbom_digest = pushed.headers["docker-content-digest"]

    everything = httpx.get(f"{cargohold.url}/v2/{repo}/referrers/{subject_digest}")
    assert everything.status_code == 200, everything.text
    assert everything.headers["content-type"].startswith(OCI_INDEX)
    assert "oci-filters-applied" not in everything.headers
    found = {m["digest"]: m for m in everything.json()["manifests"]}
    assert set(found) == {signature_digest, sbom_digest}
    assert found[signature_digest]["artifactType"] == SIGNATURE_TYPE
    assert found[signature_digest]["size"] == len(signature_manifest)
    assert found[signature_digest]["annotations"] == {"org.example.signer": "interop-test"}
    assert found[sbom_digest]["artifactType"] == SBOM_TYPE
    assert found[sbom_digest]["mediaType"] == OCI_MANIFEST
    assert found[sbom_digest]["size"] == len(fetch_manifest(cargohold, repo, sbom_digest).content)

    filtered = httpx.get(f"{cargohold.url}/v2/{repo}/referrers/{subject_digest}", params={"artifactType": SBOM_TYPE})
    assert filtered.status_code == 200, filtered.text
    assert filtered.headers.get("oci-filters-applied") == "artifactType"
    assert [m["digest"] for m in filtered.json()["manifests"]] == [sbom_digest]

    nobody = httpx.get(f"{cargohold.url}/v2/{repo}/referrers/{sha256(nonce())}")
    assert nobody.status_code == 200, nobody.text
    assert nobody.json()["manifests"] == []


# --- python-dxf ----------------------------------------------------------------------------------------------------


def test_dxf_blobs_and_aliases(any_registry: ServerProcess, tmp_path: Path) -> None:
    repo = unique("dxf")
    dxf = DXF(any_registry.host, repo, insecure=True)

    from_file = tmp_path / "blob.bin"
    from_file.write_bytes(os.urandom(200_000))
    first = dxf.push_blob(str(from_file))
    assert first == sha256(from_file.read_bytes())
    # a chunked-encoding upload from an iterator, as large streamed pushes do
    chunks = [os.urandom(70_000), os.urandom(30_000), nonce()]
    streamed = b"".join(chunks)
    second = dxf.push_blob(data=iter(chunks), digest=sha256(streamed))
    assert second == sha256(streamed)

    assert b"".join(dxf.pull_blob(first)) == from_file.read_bytes()
    assert b"".join(dxf.pull_blob(second)) == streamed
    assert dxf.blob_size(first) == from_file.stat().st_size
    assert dxf.blob_size(second) == len(streamed)

    manifest = dxf.set_alias("both", first, second)
    assert registry_digest(any_registry, repo, "both") == sha256(manifest.encode())
    keep = dxf.set_alias("second-only", second)
    assert dxf.get_alias("both") == [first, second]
    assert dxf.get_alias("second-only") == [second]
    assert sorted(dxf.list_aliases()) == ["both", "second-only"]
    assert repo in dxf.list_repos()

    assert dxf.del_alias("both") == [first, second]
    assert dxf.list_aliases() == ["second-only"]
    missing = httpx.get(f"{any_registry.url}/v2/{repo}/manifests/both", headers={"accept": DOCKER_MANIFEST})
    assert missing.status_code == 404
    # deleting a manifest leaves its blobs
    assert dxf.blob_size(first) == from_file.stat().st_size
    assert registry_digest(any_registry, repo, "second-only") == sha256(keep.encode())
