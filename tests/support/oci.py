"""Building blobs and manifests for protocol-level tests."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from urllib.parse import quote

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def unique_repo(prefix: str = "test") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def descriptor(media_type: str, data: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def canonical(document: dict[str, object]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class Image:
    config: bytes
    layers: list[bytes]
    manifest: bytes
    media_type: str = OCI_MANIFEST

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def make_image(layer_count: int = 2, layer_size: int = 1024, media_type: str = OCI_MANIFEST, **fields: object) -> Image:
    config = canonical(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "nonce": uuid.uuid4().hex,
        }
    )
    return image_of(config, [os.urandom(layer_size) for _ in range(layer_count)], media_type, **fields)


def image_of(config: bytes, layers: list[bytes], media_type: str = OCI_MANIFEST, **fields: object) -> Image:
    """The image manifest (OCI, or Docker schema 2) of this config and these layers."""
    docker = media_type == DOCKER_MANIFEST
    config_type = "application/vnd.docker.container.image.v1+json" if docker else OCI_CONFIG
    layer_type = "application/vnd.docker.image.rootfs.diff.tar.gzip" if docker else OCI_LAYER
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor(config_type, config),
            "layers": [descriptor(layer_type, layer) for layer in layers],
            **fields,
        }
    )
    return Image(config, layers, manifest, media_type)


def with_query(url: str, **params: str) -> str:
    """Add query parameters to an upload Location, keeping any it has (Distribution's _state)."""
    extra = "&".join(f"{k}={quote(v, safe=':')}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    """POST then PUT with the whole body: the monolithic upload every registry supports."""
    digest = sha256(data)
    start = client.post(f"/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202, start.text
    response = client.put(with_query(start.headers["location"], digest=digest), content=data)
    assert response.status_code == 201, response.text
    return digest


def push_image(client: httpx.Client, repo: str, image: Image, reference: str | None = None) -> httpx.Response:
    for blob in [image.config, *image.layers]:
        push_blob(client, repo, blob)
    response = client.put(
        f"/v2/{repo}/manifests/{reference or image.digest}",
        content=image.manifest,
        headers={"content-type": image.media_type},
    )
    assert response.status_code == 201, response.text
    return response


def error_code(response: httpx.Response) -> str:
    return response.json()["errors"][0]["code"]
