"""The Distribution API over real HTTP, endpoint by endpoint.

Scenarios both registries implement run against Debian's docker-registry too, so a wrong
expectation in the test shows up as a failure against the reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import httpx
import pytest

from tests.support.inprocess import InProcessRegistry
from tests.support.oci import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    canonical,
    descriptor,
    error_code,
    make_image,
    push_blob,
    push_image,
    sha256,
    unique_repo,
    with_query,
)
from tests.support.servers import ServerProcess


@pytest.fixture
def client(any_registry: ServerProcess) -> httpx.Client:
    with httpx.Client(base_url=any_registry.url, timeout=30) as c:
        yield c


@pytest.fixture
def ours(registry_app: InProcessRegistry) -> httpx.Client:
    """Behaviour only ours has (or only ours gets right), asked of the application in process."""
    with registry_app.client() as c:
        yield c


def test_base_endpoint_announces_api_version(client: httpx.Client) -> None:
    response = client.get("/v2/")
    assert response.status_code == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


def test_monolithic_upload_then_head_and_get(client: httpx.Client) -> None:
    repo, data = unique_repo(), os.urandom(70_000)
    digest = push_blob(client, repo, data)
    head = client.head(f"/v2/{repo}/blobs/{digest}")
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == len(data)
    assert head.headers["docker-content-digest"] == digest
    get = client.get(f"/v2/{repo}/blobs/{digest}")
    assert get.content == data


def test_single_request_upload(ours: httpx.Client) -> None:
    repo, data = unique_repo(), os.urandom(50_000)
    response = ours.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=data)
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/{repo}/blobs/{sha256(data)}"
    assert ours.get(response.headers["location"]).content == data


def test_chunked_upload_with_status(client: httpx.Client) -> None:
    repo, data = unique_repo(), os.urandom(300_000)
    start = client.post(f"/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202
    location = start.headers["location"]
    first = client.patch(
        location,
        content=data[:100_000],
        headers={"content-range": "0-99999", "content-type": "application/octet-stream"},
    )
    assert first.status_code == 202
    assert first.headers["range"] == "0-99999"
    location = first.headers["location"]
    status = client.get(location)
    assert status.status_code == 204
    assert status.headers["range"] == "0-99999"
    second = client.patch(location, content=data[100_000:200_000], headers={"content-range": "100000-199999"})
    assert second.status_code == 202
    assert second.headers["range"] == "0-199999"
    done = client.put(with_query(second.headers["location"], digest=sha256(data)), content=data[200_000:])
    assert done.status_code == 201
    assert done.headers["docker-content-digest"] == sha256(data)
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_out_of_order_chunk_is_refused(ours: httpx.Client) -> None:
    # Distribution 2.8 ignores Content-Range and appends anyway, so this runs on ours only.
    repo = unique_repo()
    location = ours.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    assert ours.patch(location, content=b"x" * 100, headers={"content-range": "0-99"}).status_code == 202
    skipped = ours.patch(location, content=b"y" * 50, headers={"content-range": "150-199"})
    assert skipped.status_code == 416
    assert skipped.headers["range"] == "0-99"
    assert error_code(skipped) == "BLOB_UPLOAD_INVALID"
    assert ours.get(location).headers["range"] == "0-99"


def test_cancelled_upload_is_gone(client: httpx.Client) -> None:
    repo = unique_repo()
    location = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    location = client.patch(location, content=b"abc").headers["location"]
    assert client.delete(location).status_code == 204
    response = client.get(location)
    assert response.status_code == 404
    assert error_code(response) == "BLOB_UPLOAD_UNKNOWN"


def test_digest_mismatch_stores_nothing(client: httpx.Client) -> None:
    repo, data = unique_repo(), b"the real content"
    wrong = sha256(b"something else")
    location = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    response = client.put(with_query(location, digest=wrong), content=data)
    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404


def test_reupload_of_a_stored_blob_keeps_one_copy_and_heals_a_damaged_one(registry_app: InProcessRegistry) -> None:
    data = os.urandom(300_000)
    digest = sha256(data)
    stored = registry_app.data / "blobs" / "sha256" / digest[7:9] / digest[7:]
    uploads = registry_app.data / "uploads"
    with registry_app.client() as ours:
        first, second = unique_repo(), unique_repo()
        push_blob(ours, first, data)
        inode = stored.stat().st_ino
        others = set(uploads.iterdir())  # sessions other tests left on this shared server
        push_blob(ours, second, data)  # no mount: the whole body travels again
        assert stored.stat().st_ino == inode, "the stored copy was replaced, not kept"
        assert ours.get(f"/v2/{second}/blobs/{digest}").content == data
        # The redundant upload file left uploads/ with the answer, and is freed in the background.
        assert not set(uploads.iterdir()) - others
        trash = registry_app.data / "trash"
        deadline = time.monotonic() + 10
        while any(trash.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(trash.iterdir())

        stored.write_bytes(data[:1000])  # damaged on disk: the next upload of the content repairs it
        assert ours.get(f"/v2/{first}/blobs/{digest}").status_code == 404
        push_blob(ours, unique_repo(), data)
        assert ours.get(f"/v2/{first}/blobs/{digest}").content == data


def test_cross_repository_mount(client: httpx.Client) -> None:
    source, target, data = unique_repo(), unique_repo(), os.urandom(5000)
    digest = push_blob(client, source, data)
    mounted = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert mounted.status_code == 201
    assert mounted.headers["docker-content-digest"] == digest
    assert client.get(f"/v2/{target}/blobs/{digest}").content == data
    # Mounting from a repository that lacks the blob falls back to a normal upload session.
    fallback = client.post(f"/v2/{unique_repo()}/blobs/uploads/", params={"mount": digest, "from": unique_repo()})
    assert fallback.status_code == 202
    assert "location" in fallback.headers


def test_blob_is_only_readable_through_a_repository_that_links_it(ours: httpx.Client) -> None:
    repo, data = unique_repo(), os.urandom(100)
    digest = push_blob(ours, repo, data)
    response = ours.get(f"/v2/{unique_repo()}/blobs/{digest}")
    assert response.status_code == 404
    assert error_code(response) == "BLOB_UNKNOWN"


@pytest.mark.parametrize(
    ("header", "status", "expected"),
    [
        ("bytes=0-9", 206, slice(0, 10)),
        ("bytes=990-", 206, slice(990, 1000)),
        ("bytes=-5", 206, slice(995, 1000)),
        ("bytes=500-5000", 206, slice(500, 1000)),
    ],
)
def test_range_requests(client: httpx.Client, header: str, status: int, expected: slice) -> None:
    repo, data = unique_repo(), os.urandom(1000)
    digest = push_blob(client, repo, data)
    response = client.get(f"/v2/{repo}/blobs/{digest}", headers={"range": header})
    assert response.status_code == status
    assert response.content == data[expected]
    first, last = expected.start, expected.stop - 1
    assert response.headers["content-range"] == f"bytes {first}-{last}/1000"


def test_unsatisfiable_range(ours: httpx.Client) -> None:
    # Distribution 2.8 answers 416 with a truncated body, so this runs on ours only.
    repo = unique_repo()
    digest = push_blob(ours, repo, os.urandom(1000))
    response = ours.get(f"/v2/{repo}/blobs/{digest}", headers={"range": "bytes=1000-2000"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */1000"


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_manifest_by_tag_and_digest(client: httpx.Client, media_type: str) -> None:
    repo, image = unique_repo(), make_image(media_type=media_type)
    pushed = push_image(client, repo, image, "v1")
    assert pushed.headers["docker-content-digest"] == image.digest
    for reference in ("v1", image.digest):
        got = client.get(f"/v2/{repo}/manifests/{reference}", headers={"accept": media_type})
        assert got.status_code == 200
        assert got.content == image.manifest
        assert got.headers["content-type"] == media_type
        assert got.headers["docker-content-digest"] == image.digest
        head = client.head(f"/v2/{repo}/manifests/{reference}", headers={"accept": media_type})
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == len(image.manifest)


@pytest.mark.parametrize(("index_type", "child_type"), [(OCI_INDEX, OCI_MANIFEST), (DOCKER_LIST, DOCKER_MANIFEST)])
def test_index_requires_its_children(client: httpx.Client, index_type: str, child_type: str) -> None:
    repo = unique_repo()
    children = [make_image(media_type=child_type) for _ in range(2)]
    platforms = [{"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux"}]
    index = canonical(
        {
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": [
                descriptor(child_type, c.manifest, platform=p) for c, p in zip(children, platforms, strict=True)
            ],
        }
    )
    missing = client.put(f"/v2/{repo}/manifests/multi", content=index, headers={"content-type": index_type})
    assert missing.status_code in (400, 404)
    assert error_code(missing) in ("MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID")
    for child in children:
        push_image(client, repo, child)
    pushed = client.put(f"/v2/{repo}/manifests/multi", content=index, headers={"content-type": index_type})
    assert pushed.status_code == 201
    got = client.get(f"/v2/{repo}/manifests/multi", headers={"accept": index_type})
    assert got.content == index
    assert got.headers["content-type"] == index_type


def test_manifest_referencing_unknown_blob(ours: httpx.Client) -> None:
    repo, image = unique_repo(), make_image()
    push_blob(ours, repo, image.config)
    response = ours.put(f"/v2/{repo}/manifests/v1", content=image.manifest, headers={"content-type": OCI_MANIFEST})
    assert response.status_code == 404
    assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"
    assert sha256(image.layers[0]) in response.text


def test_content_negotiation_refuses_unaccepted_type(ours: httpx.Client) -> None:
    repo, image = unique_repo(), make_image()
    push_image(ours, repo, image, "v1")
    refused = ours.get(f"/v2/{repo}/manifests/v1", headers={"accept": DOCKER_MANIFEST})
    assert refused.status_code == 404
    assert error_code(refused) == "MANIFEST_UNKNOWN"
    assert "does not accept" in refused.json()["errors"][0]["message"]
    assert ours.get(f"/v2/{repo}/manifests/v1", headers={"accept": "*/*"}).status_code == 200
    both = ours.get(f"/v2/{repo}/manifests/v1", headers={"accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"})
    assert both.status_code == 200


def test_delete_by_tag_keeps_the_manifest(ours: httpx.Client) -> None:
    repo, image = unique_repo(), make_image()
    push_image(ours, repo, image, "v1")
    push_image(ours, repo, image, "v2")
    assert ours.delete(f"/v2/{repo}/manifests/v1").status_code == 202
    assert ours.get(f"/v2/{repo}/manifests/v1").status_code == 404
    assert ours.get(f"/v2/{repo}/manifests/{image.digest}").status_code == 200
    assert ours.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v2"]


def test_delete_by_digest_removes_manifest_and_tags(client: httpx.Client) -> None:
    repo, image = unique_repo(), make_image()
    push_image(client, repo, image, "v1")
    assert client.delete(f"/v2/{repo}/manifests/{image.digest}").status_code == 202
    for reference in ("v1", image.digest):
        response = client.get(f"/v2/{repo}/manifests/{reference}")
        assert response.status_code == 404
        assert error_code(response) == "MANIFEST_UNKNOWN"
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] in ([], None)


def test_artifact_with_subject_and_referrers(ours: httpx.Client) -> None:
    repo, image = unique_repo(), make_image()
    push_image(ours, repo, image, "v1")
    empty = b"{}"
    push_blob(ours, repo, empty)
    payloads = {}
    for kind in ("application/vnd.example.sbom", "application/vnd.example.signature"):
        blob = os.urandom(64)
        push_blob(ours, repo, blob)
        payloads[kind] = canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": kind,
                "config": descriptor(OCI_EMPTY, empty),
                "layers": [descriptor("application/octet-stream", blob)],
                "subject": descriptor(OCI_MANIFEST, image.manifest),
                "annotations": {"org.example.kind": kind},
            }
        )
        response = ours.put(
            f"/v2/{repo}/manifests/{sha256(payloads[kind])}",
            content=payloads[kind],
            headers={"content-type": OCI_MANIFEST},
        )
        assert response.status_code == 201
        assert response.headers["oci-subject"] == image.digest
    listing = ours.get(f"/v2/{repo}/referrers/{image.digest}")
    assert listing.status_code == 200
    assert listing.headers["content-type"] == OCI_INDEX
    found = {m["artifactType"]: m for m in listing.json()["manifests"]}
    assert set(found) == set(payloads)
    for kind, payload in payloads.items():
        assert found[kind]["digest"] == sha256(payload)
        assert found[kind]["size"] == len(payload)
        assert found[kind]["annotations"] == {"org.example.kind": kind}
    filtered = ours.get(f"/v2/{repo}/referrers/{image.digest}", params={"artifactType": "application/vnd.example.sbom"})
    assert filtered.headers["oci-filters-applied"] == "artifactType"
    assert [m["artifactType"] for m in filtered.json()["manifests"]] == ["application/vnd.example.sbom"]
    unknown = ours.get(f"/v2/{repo}/referrers/{sha256(b'nothing refers to this')}")
    assert unknown.status_code == 200
    assert unknown.json()["manifests"] == []


def test_tag_listing_is_sorted_and_paginated(ours: httpx.Client) -> None:
    # Distribution 2.8 returns tags unsorted unless paginated, against the spec: ours only.
    client = ours
    repo, image = unique_repo(), make_image()
    tags = [f"t{i:03d}" for i in range(25)]
    push_image(client, repo, image, tags[0])
    for tag in reversed(tags[1:]):
        response = client.put(
            f"/v2/{repo}/manifests/{tag}", content=image.manifest, headers={"content-type": OCI_MANIFEST}
        )
        assert response.status_code == 201
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == tags
    collected, url = [], f"/v2/{repo}/tags/list?n=10"
    while url:
        page = client.get(url)
        assert page.status_code == 200
        collected += page.json()["tags"]
        link = page.headers.get("link")
        url = link[1 : link.index(">")] if link else ""
    assert collected == tags
    after = client.get(f"/v2/{repo}/tags/list", params={"n": 5, "last": "t019"}).json()["tags"]
    assert after == tags[20:25]


def test_tags_of_unknown_repository(client: httpx.Client) -> None:
    response = client.get(f"/v2/{unique_repo()}/tags/list")
    assert response.status_code == 404
    assert error_code(response) == "NAME_UNKNOWN"


def test_catalog_is_sorted_and_paginated(ours: httpx.Client) -> None:
    prefix = unique_repo("catalog")
    names = sorted(f"{prefix}/r{i}" for i in range(7))
    for name in names:
        push_image(ours, name, make_image(layer_count=1), "v1")
    everything = ours.get("/v2/_catalog").json()["repositories"]
    assert everything == sorted(everything)
    assert [n for n in everything if n.startswith(prefix)] == names
    page = ours.get("/v2/_catalog", params={"n": 3, "last": names[0]})
    assert page.json()["repositories"] == names[1:4]
    assert page.headers["link"].startswith("</v2/_catalog?n=3&last=")


def test_sha512_blob(ours: httpx.Client) -> None:
    repo, data = unique_repo(), os.urandom(10_000)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    location = ours.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    assert ours.put(with_query(location, digest=digest), content=data).status_code == 201
    got = ours.get(f"/v2/{repo}/blobs/{digest}")
    assert got.content == data
    assert got.headers["docker-content-digest"] == digest


def test_oci_artifact_with_empty_config_and_no_layers(ours: httpx.Client) -> None:
    repo = unique_repo()
    push_blob(ours, repo, b"{}")
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.thing",
            "config": descriptor(OCI_EMPTY, b"{}"),
            "layers": [],
        }
    )
    response = ours.put(f"/v2/{repo}/manifests/thing", content=manifest, headers={"content-type": OCI_MANIFEST})
    assert response.status_code == 201
    assert (
        json.loads(ours.get(f"/v2/{repo}/manifests/thing").content)["artifactType"] == "application/vnd.example.thing"
    )


def test_upload_continues_after_restart(fresh_cargohold: ServerProcess) -> None:
    repo, data = unique_repo(), os.urandom(200_000)
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        location = c.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
        assert c.patch(location, content=data[:120_000]).status_code == 202
    fresh_cargohold.stop()
    fresh_cargohold.start()
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        assert c.get(location).headers["range"] == "0-119999"
        assert c.put(with_query(location, digest=sha256(data)), content=data[120_000:]).status_code == 201
        assert c.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
