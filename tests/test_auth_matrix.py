"""Every endpoint against every kind of caller: the expected status, and no unexpected grant."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cargohold.auth.keys import KeyRing
from cargohold.auth.sealing import load_secret
from cargohold.storage.backends import open_database
from tests.support.auth import SERVICE, SecureRegistry
from tests.support.oci import OCI_MANIFEST, canonical, descriptor, make_image, push_blob, push_image
from tests.support.servers import Cargohold
from tests.support.waiting import wait_until

FULL_SCOPES = ("registry:catalog:*", "registry:admin:*")


@dataclass
class World:
    registry: SecureRegistry
    repo: str
    admin: httpx.Client
    upload: str = ""
    layer: str = ""
    manifest: str = ""
    # per caller: a tag it may delete, a blob it may delete, a manifest body it may push
    deletable_tag: dict[str, str] = field(default_factory=dict)
    deletable_blob: dict[str, str] = field(default_factory=dict)


def _server_key(data: Path) -> tuple[str, ec.EllipticCurvePrivateKey]:
    """The registry's own signing key, as one who stole the database and the secret file has it."""
    database = open_database(data / "metadata.sqlite3")
    try:
        return KeyRing(database, load_secret(data / "secret.key", create=False)).load().signing_key()
    finally:
        database.close()


def _mint(
    key: ec.EllipticCurvePrivateKey, kid: str, repo: str, *, exp_in: int = 300, aud: str = SERVICE, iss: str = SERVICE
) -> str:
    now = int(time.time())
    claims = {
        "iss": iss,
        "sub": "admin",
        "aud": aud,
        "iat": now - 600,
        "nbf": now - 600,
        "exp": now + exp_in,
        "access": [
            {"type": "repository", "name": repo, "actions": ["pull", "push", "delete"]},
            {"type": "registry", "name": "catalog", "actions": ["*"]},
            {"type": "registry", "name": "admin", "actions": ["*"]},
        ],
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # A registry of its own: this module rotates and prunes signing keys.
    server = Cargohold(tmp_path_factory.mktemp("matrix"), auth=True, tls=True)
    server.start()
    registry = SecureRegistry(server)
    repo = f"team/app-{uuid.uuid4().hex[:8]}"
    registry.add_user("reader", "reader-password-1", "team/*:pull")
    registry.add_user("writer", "writer-password-1", "team/*:pull,push,delete")
    registry.add_user("boss", "boss-password-1", admin=True)
    registry.robot_in = registry.create_robot("ci-team", "repository:team/*:pull,push")  # type: ignore[attr-defined]
    registry.robot_out = registry.create_robot("ci-other", "repository:other/*:pull,push")  # type: ignore[attr-defined]
    # basic auth: a token would be signed by the key this fixture prunes
    admin = registry.client(auth=("admin", registry.admin_password))
    world = World(registry, repo, admin)
    image = make_image()
    assert push_image(admin, repo, image, "v1").status_code == 201
    world.layer = push_blob(admin, repo, image.layers[0])
    world.manifest = image.digest
    start = admin.post(f"/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202, start.text
    world.upload = start.headers["location"]
    # tokens whose signature or claims are wrong, minted with the server's own key where that matters
    kid, key = _server_key(server.data)
    world.bad_tokens = {  # type: ignore[attr-defined]
        "expired token": _mint(key, kid, repo, exp_in=-120),
        "forged signature": _mint(ec.generate_private_key(ec.SECP256R1()), kid, repo),
        "other audience": _mint(key, kid, repo, aud="some-other-registry"),
        "other issuer": _mint(key, kid, repo, iss="some-other-issuer"),
        "rotated-out key": _mint(key, kid, repo),
    }
    registry.cli("keys", "rotate")
    registry.cli("keys", "prune", "--older-than", "0s")
    # Processes look for removed keys at most once a second: wait until the server has.
    rotated_out = {"authorization": f"Bearer {world.bad_tokens['rotated-out key']}"}  # type: ignore[attr-defined]
    wait_until(
        lambda: httpx.get(f"{server.url}/v2/", headers=rotated_out, verify=False).status_code == 401, "key pruned"
    )
    yield world
    admin.close()
    server.stop()


# caller -> what it may do; a refusal is 401 when no valid identity stands behind the request
CALLERS = {
    "anonymous": (set(), 401),
    "reader": ({"login", "pull"}, 403),
    "writer": ({"login", "pull", "push", "delete"}, 403),
    "admin": ({"login", "pull", "push", "delete", "catalog", "admin"}, 403),
    "robot in scope": ({"login", "pull", "push"}, 403),
    "robot out of scope": ({"login"}, 403),
    "expired token": (set(), 401),
    "forged signature": (set(), 401),
    "other audience": (set(), 401),
    "other issuer": (set(), 401),
    "rotated-out key": (set(), 401),
}
LOGINS = {
    "reader": ("reader", "reader-password-1"),
    "writer": ("writer", "writer-password-1"),
    "admin": ("boss", "boss-password-1"),
}


def _headers(world: World, caller: str, mode: str) -> dict[str, str]:
    registry = world.registry
    if caller == "anonymous":
        return {}
    if caller in world.bad_tokens:  # type: ignore[attr-defined]
        return {"authorization": f"Bearer {world.bad_tokens[caller]}"}  # type: ignore[attr-defined]
    if caller in LOGINS:
        username, password = LOGINS[caller]
    else:
        secret = registry.robot_in if caller == "robot in scope" else registry.robot_out  # type: ignore[attr-defined]
        username, password = ("ci-team" if caller == "robot in scope" else "ci-other"), secret
    if mode == "basic":
        return {"authorization": httpx.BasicAuth(username, password)._auth_header}
    token = registry.token(username, password, f"repository:{world.repo}:pull,push,delete", *FULL_SCOPES)
    return {"authorization": f"Bearer {token}"}


def _requests(world: World, caller: str, client: httpx.Client) -> list[tuple[str, str, httpx.Response]]:
    """(endpoint, permission needed, response) for every endpoint."""
    repo = world.repo
    # things this caller may destroy or create, made fresh by the admin so each caller has its own
    unique = uuid.uuid4().hex[:8]
    image = make_image(layer_count=1)
    assert push_image(world.admin, repo, image, f"del-{unique}").status_code == 201
    own_blob = push_blob(world.admin, repo, f"blob {unique}".encode())
    own_upload = world.admin.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    config = canonical({"architecture": "amd64", "os": "linux", "caller": unique})
    push_blob(world.admin, repo, config)
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [],
        }
    )
    v2 = f"/v2/{repo}"
    calls = [
        ("GET /v2/", "login", lambda: client.get("/v2/")),
        ("GET catalog", "catalog", lambda: client.get("/v2/_catalog")),
        ("GET tags", "pull", lambda: client.get(f"{v2}/tags/list")),
        ("GET manifest", "pull", lambda: client.get(f"{v2}/manifests/v1", headers={"accept": OCI_MANIFEST})),
        ("HEAD manifest", "pull", lambda: client.head(f"{v2}/manifests/v1", headers={"accept": OCI_MANIFEST})),
        ("GET blob", "pull", lambda: client.get(f"{v2}/blobs/{world.layer}")),
        ("HEAD blob", "pull", lambda: client.head(f"{v2}/blobs/{world.layer}")),
        ("GET referrers", "pull", lambda: client.get(f"{v2}/referrers/{world.manifest}")),
        ("POST upload", "push", lambda: client.post(f"{v2}/blobs/uploads/")),
        ("PATCH upload", "push", lambda: client.patch(world.upload, content=b"x" * 10)),
        ("GET upload", "push", lambda: client.get(world.upload)),
        ("PUT manifest", "push", lambda: client.put(f"{v2}/manifests/put-{unique}", content=manifest,
                                                     headers={"content-type": OCI_MANIFEST})),
        ("DELETE tag", "delete", lambda: client.delete(f"{v2}/manifests/del-{unique}")),
        ("DELETE blob", "delete", lambda: client.delete(f"{v2}/blobs/{own_blob}")),
        ("DELETE upload", "push", lambda: client.delete(own_upload)),
        ("GET api users", "admin", lambda: client.get("/api/v1/users")),
        ("GET api audit", "admin", lambda: client.get("/api/v1/audit")),
        ("GET api usage", "admin", lambda: client.get("/api/v1/usage")),
    ]  # fmt: skip
    return [(name, needed, call()) for name, needed, call in calls]


@pytest.mark.parametrize("mode", ["bearer", "basic"])
def test_permission_matrix(world: World, mode: str) -> None:
    unexpected = []
    for caller, (allowed, refusal) in CALLERS.items():
        if mode == "basic" and caller not in (*LOGINS, "robot in scope", "robot out of scope"):
            continue  # the token-only callers are the same in both modes
        with world.registry.client(headers=_headers(world, caller, mode)) as client:
            for endpoint, needed, response in _requests(world, caller, client):
                ok = 200 <= response.status_code < 300 if needed in allowed else response.status_code == refusal
                if not ok:
                    unexpected.append(f"{caller:>18} {endpoint:<14} -> {response.status_code} {response.text[:120]}")
                if response.status_code == 401:
                    assert "www-authenticate" in response.headers, (caller, endpoint)
    assert not unexpected, "unexpected answers:\n" + "\n".join(unexpected)
