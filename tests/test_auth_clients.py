"""Real clients through token auth over TLS: docker, skopeo, podman, python-dxf and oras-py.

Also the CI-robot stories: a robot pushes where its scope allows and is DENIED elsewhere, a
pull-only robot can neither push nor delete, and expired or revoked credentials are refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import oras.client
import pytest
from dxf import DXF

from tests.support.auth import SecureRegistry
from tests.support.cli import CargoholdCLI
from tests.support.clients import (
    ContainersTools,
    Dockerd,
    build_umoci_image,
    hello_context,
    layout_digest,
)
from tests.support.oci import make_image, push_image, sha256
from tests.support.waiting import wait_until

# Real engines, kill -9 loops or whole benchmark runs: not in the fast lane (make test-fast).
pytestmark = pytest.mark.slow


def unique(prefix: str) -> str:
    return f"team/{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def users(secure_registry: SecureRegistry) -> dict[str, str]:
    """A developer who may work in team/*, and a reader of team/*."""
    suffix = uuid.uuid4().hex[:6]
    return {
        "dev": secure_registry.add_user(f"dev-{suffix}", f"dev-pw-{uuid.uuid4().hex}", "team/*:pull,push,delete"),
        "dev_name": f"dev-{suffix}",
        "reader": secure_registry.add_user(f"reader-{suffix}", f"reader-pw-{uuid.uuid4().hex}", "team/*:pull"),
        "reader_name": f"reader-{suffix}",
    }


@pytest.fixture
def docker_trusts(secure_registry: SecureRegistry) -> Iterator[None]:
    """dockerd reads registry CAs from /etc/docker/certs.d/<host:port>/ca.crt, nowhere else."""
    certs = Path("/etc/docker/certs.d") / secure_registry.host
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy(secure_registry.ca, certs / "ca.crt")
    yield
    shutil.rmtree(certs, ignore_errors=True)


def skopeo_creds(name: str, secret: str) -> str:
    return f"{name}:{secret}"


def umoci_image(tmp_path: Path) -> tuple[Path, str]:
    layout = tmp_path / "layout"
    digest = build_umoci_image(layout, "v1", [{"a.txt": uuid.uuid4().bytes}, {"b.bin": os.urandom(5000)}])
    return layout, digest


def test_docker_login_push_pull(
    dockerd: Dockerd, secure_registry: SecureRegistry, users: dict[str, str], docker_trusts: None, tmp_path: Path
) -> None:
    host = secure_registry.host
    image = f"{host}/{unique('docker')}:v1"
    context = hello_context(tmp_path / "ctx", f"hello {uuid.uuid4()}".encode(), "Dockerfile")
    dockerd.run("build", "--network", "host", "-t", image, context)

    # before login the push is refused
    refused = dockerd.run("push", image, check=False)
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "denied" in refused.stderr.lower(), refused.stderr

    login = dockerd.run("login", "-u", users["dev_name"], "--password-stdin", host, stdin=users["dev"] + "\n")
    assert "Login Succeeded" in login.stdout
    # docker keeps the refresh token our token server handed out, not the password
    stored = json.loads((Path(dockerd.env["DOCKER_CONFIG"]) / "config.json").read_text())["auths"][host]
    assert stored["identitytoken"].startswith("chf_") and users["dev"] not in json.dumps(stored)
    secure_registry.secrets.add(stored["identitytoken"])
    pushed = dockerd.run("push", image).stdout
    digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
    assert digest, pushed
    # cargohold's client uses docker's stored login as it is
    ours = CargoholdCLI(tmp_path / "client", env={"DOCKER_CONFIG": dockerd.env["DOCKER_CONFIG"]})
    inspected = ours.json("inspect", image, "--ca-cert", str(secure_registry.ca))
    assert inspected["digest"] == digest[1]
    dockerd.run("rmi", image)
    pulled = dockerd.run("pull", image).stdout
    assert f"Digest: {digest[1]}" in pulled
    out = dockerd.run("run", "--rm", "--network", "host", image, "/bin/busybox", "cat", "/hello.txt").stdout
    assert out.startswith("hello ")
    dockerd.run("rmi", image)

    # wrong password: docker login fails and says so
    wrong = dockerd.run(
        "login", "-u", users["dev_name"], "--password-stdin", host, stdin="not-the-password\n", check=False
    )
    assert wrong.returncode != 0
    assert "unauthorized" in wrong.stderr.lower() or "invalid" in wrong.stderr.lower(), wrong.stderr
    dockerd.run("logout", host)


def test_skopeo_with_creds_and_cert_dir(
    containers: ContainersTools, secure_registry: SecureRegistry, users: dict[str, str], tmp_path: Path
) -> None:
    layout, digest = umoci_image(tmp_path)
    repo = unique("skopeo")
    target = f"docker://{secure_registry.host}/{repo}:v1"
    creds = skopeo_creds(users["dev_name"], users["dev"])
    certs = secure_registry.cert_dir
    containers.skopeo("copy", "--dest-cert-dir", certs, "--dest-creds", creds, f"oci:{layout}:v1", target)
    inspected = containers.skopeo("inspect", "--raw", "--cert-dir", certs, "--creds", creds, target).stdout
    assert sha256(inspected.encode()) == digest
    containers.skopeo("copy", "--src-cert-dir", certs, "--src-creds", creds, target, f"oci:{tmp_path / 'out'}:v1")
    assert layout_digest(tmp_path / "out", "v1") == digest
    # the reader may pull but not push
    reader = skopeo_creds(users["reader_name"], users["reader"])
    containers.skopeo("inspect", "--cert-dir", certs, "--creds", reader, target)
    refused = containers.skopeo(
        "copy", "--dest-cert-dir", certs, "--dest-creds", reader, f"oci:{layout}:v1", target + "-again", check=False
    )
    assert refused.returncode != 0 and re.search(r"denied|403", refused.stderr, re.I), refused.stderr
    # without the CA there is no connection at all
    untrusted = containers.skopeo("inspect", "--creds", creds, target, check=False)
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr.lower(), untrusted.stderr


def test_podman_login_push(
    containers: ContainersTools, secure_registry: SecureRegistry, users: dict[str, str], tmp_path: Path
) -> None:
    layout, _ = umoci_image(tmp_path)
    host = secure_registry.host
    certs = str(secure_registry.cert_dir)
    containers.podman(
        "login", "--cert-dir", certs, "-u", users["dev_name"], "--password-stdin", host, stdin=users["dev"] + "\n"
    )
    remote = f"{host}/{unique('podman')}:v1"
    local = containers.podman("pull", "-q", f"oci:{layout}:v1").stdout.split()[-1]
    digest_file = tmp_path / "digest"
    containers.podman("push", "--cert-dir", certs, "--digestfile", digest_file, local, f"docker://{remote}")
    pushed = digest_file.read_text().strip()
    repo, _, tag = remote.removeprefix(host + "/").rpartition(":")
    with secure_registry.client(auth=(users["dev_name"], users["dev"])) as client:
        manifest = client.get(f"/v2/{repo}/manifests/{tag}", headers={"accept": "*/*"})
    assert manifest.status_code == 200 and sha256(manifest.content) == pushed
    containers.podman("rmi", "-f", local)
    containers.podman("pull", "--cert-dir", certs, remote)
    assert containers.podman("image", "inspect", "--format", "{{.Digest}}", remote).stdout.strip() == pushed
    containers.podman("rmi", "-f", remote)
    containers.podman("logout", host)
    refused = containers.podman("pull", "--cert-dir", certs, remote, check=False)
    assert refused.returncode != 0


def test_python_dxf_over_https_with_auth(
    secure_registry: SecureRegistry, users: dict[str, str], tmp_path: Path
) -> None:
    repo = unique("dxf")
    name, password = users["dev_name"], users["dev"]
    dxf = DXF(
        secure_registry.host,
        repo,
        auth=lambda d, r: d.authenticate(name, password, response=r),
        tlsverify=str(secure_registry.ca),
    )
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(100_000))
    digest = dxf.push_blob(str(blob))
    assert digest == sha256(blob.read_bytes())
    assert b"".join(dxf.pull_blob(digest)) == blob.read_bytes()
    dxf.set_alias("latest", digest)
    assert dxf.list_aliases() == ["latest"]
    assert dxf.get_alias("latest") == [digest]

    wrong = DXF(
        secure_registry.host, repo, auth=lambda d, r: d.authenticate(name, "wrong-password", response=r),
        tlsverify=str(secure_registry.ca),
    )  # fmt: skip
    with pytest.raises(Exception, match=r"(?i)unauthorized|401"):
        wrong.list_aliases()


def test_oras_with_basic_auth(secure_registry: SecureRegistry, users: dict[str, str], tmp_path: Path) -> None:
    client = oras.client.OrasClient(
        hostname=secure_registry.host, tls_verify=str(secure_registry.ca), auth_backend="basic"
    )
    client.auth.set_basic_auth(users["dev_name"], users["dev"])
    artifact = tmp_path / "notes.txt"
    artifact.write_text(f"release notes {uuid.uuid4()}")
    target = f"{secure_registry.host}/{unique('oras')}:notes"
    response = client.push(target=target, files=[str(artifact)], disable_path_validation=True, quiet=True)
    assert response.status_code == 201, response.text
    pulled = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert [Path(p).read_text() for p in pulled] == [artifact.read_text()]


# --- CI robots ---------------------------------------------------------------------------------------------------


def test_ci_robot_pushes_in_scope_and_is_denied_elsewhere(
    containers: ContainersTools, secure_registry: SecureRegistry, tmp_path: Path
) -> None:
    robot = f"ci-{uuid.uuid4().hex[:6]}"
    secret = secure_registry.create_robot(robot, "repository:team/*:pull,push", expires="1d")
    layout, _ = umoci_image(tmp_path)
    certs = secure_registry.cert_dir
    creds = skopeo_creds(robot, secret)
    inside = f"docker://{secure_registry.host}/{unique('robot')}:v1"
    containers.skopeo("copy", "--dest-cert-dir", certs, "--dest-creds", creds, f"oci:{layout}:v1", inside)
    outside = f"docker://{secure_registry.host}/prod/app-{uuid.uuid4().hex[:6]}:v1"
    refused = containers.skopeo(
        "copy", "--dest-cert-dir", certs, "--dest-creds", creds, f"oci:{layout}:v1", outside, check=False
    )
    # skopeo first HEADs a layer there; the 403 to that (no body on a HEAD) is what it reports
    assert refused.returncode != 0 and re.search(r"denied|403", refused.stderr, re.I), refused.stderr
    # the same through the API: DENIED with a message that names who and what
    with secure_registry.client(auth=(robot, secret)) as client:
        response = client.post(f"/v2/prod/app-{uuid.uuid4().hex[:6]}/blobs/uploads/")
    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "DENIED"
    assert robot in response.json()["errors"][0]["message"]


def test_pull_only_robot_cannot_push_or_delete(
    containers: ContainersTools, secure_registry: SecureRegistry, users: dict[str, str], tmp_path: Path
) -> None:
    repo = unique("pullonly")
    with secure_registry.client(auth=(users["dev_name"], users["dev"])) as dev:
        image = make_image()
        assert push_image(dev, repo, image, "v1").status_code == 201
    robot = f"puller-{uuid.uuid4().hex[:6]}"
    secret = secure_registry.create_robot(robot, "repository:team/*:pull")
    certs = secure_registry.cert_dir
    target = f"docker://{secure_registry.host}/{repo}:v1"
    containers.skopeo("inspect", "--raw", "--cert-dir", certs, "--creds", f"{robot}:{secret}", target)
    layout, _ = umoci_image(tmp_path)
    push = containers.skopeo(
        "copy", "--dest-cert-dir", certs, "--dest-creds", f"{robot}:{secret}", f"oci:{layout}:v1", target, check=False
    )
    assert push.returncode != 0 and re.search(r"denied|403", push.stderr, re.I), push.stderr
    delete = containers.skopeo("delete", "--cert-dir", certs, "--creds", f"{robot}:{secret}", target, check=False)
    assert delete.returncode != 0
    token = secure_registry.token(robot, secret, f"repository:{repo}:pull,push,delete")
    with secure_registry.bearer(token) as client:
        assert client.get(f"/v2/{repo}/manifests/v1", headers={"accept": "*/*"}).status_code == 200
        assert client.delete(f"/v2/{repo}/manifests/v1").status_code == 403
        assert client.post(f"/v2/{repo}/blobs/uploads/").status_code == 403
    with secure_registry.client(auth=(users["dev_name"], users["dev"])) as dev:
        assert dev.get(f"/v2/{repo}/manifests/v1", headers={"accept": "*/*"}).status_code == 200


def test_expired_and_revoked_credentials_are_refused(secure_registry: SecureRegistry, users: dict[str, str]) -> None:
    short = f"brief-{uuid.uuid4().hex[:6]}"
    brief = secure_registry.create_robot(short, "repository:team/*:pull", expires="2s")
    with secure_registry.client(auth=(short, brief)) as client:
        assert client.get("/v2/").status_code == 200
        wait_until(lambda: client.get("/v2/").status_code == 401, "the robot expires", timeout=10, poll=0.2)
    with secure_registry.client() as client:
        assert client.get("/token", auth=(short, brief)).status_code == 401

    # a personal access token works until revoked, then not, even for a process that saw it work
    pat = secure_registry.create_token(users["dev_name"], f"laptop-{uuid.uuid4().hex[:4]}")
    with secure_registry.client(auth=(users["dev_name"], pat)) as client:
        assert client.get("/v2/").status_code == 200
        listed = secure_registry.cli("token", "ls", "--user", users["dev_name"], "--json").stdout
        token_id = next(t["id"] for t in json.loads(listed) if t["kind"] == "token" and not t["revoked"])
        secure_registry.cli("token", "revoke", str(token_id))
        assert client.get("/v2/").status_code == 401

    # a robot that is deleted stops at once too
    gone = f"gone-{uuid.uuid4().hex[:6]}"
    secret = secure_registry.create_robot(gone, "repository:team/*:pull")
    with secure_registry.client(auth=(gone, secret)) as client:
        assert client.get("/v2/").status_code == 200
        secure_registry.cli("robot", "rm", gone)
        assert client.get("/v2/").status_code == 401


def test_token_for_one_repository_is_refused_on_another(secure_registry: SecureRegistry, users: dict[str, str]) -> None:
    first, second = unique("first"), unique("second")
    with secure_registry.client(auth=(users["dev_name"], users["dev"])) as dev:
        for repo in (first, second):
            assert push_image(dev, repo, make_image(), "v1").status_code == 201
    token = secure_registry.token(users["dev_name"], users["dev"], f"repository:{first}:pull")
    with secure_registry.bearer(token) as client:
        assert client.get(f"/v2/{first}/manifests/v1", headers={"accept": "*/*"}).status_code == 200
        other = client.get(f"/v2/{second}/manifests/v1", headers={"accept": "*/*"})
        # the user could have it, so the client is sent back for a token with that scope
        assert other.status_code == 401
        challenge = other.headers["www-authenticate"]
        assert f'scope="repository:{second}:pull"' in challenge and 'error="insufficient_scope"' in challenge
        assert client.put(f"/v2/{first}/manifests/v2", content=b"{}").status_code == 401
    # a user who could never have it is DENIED outright
    token = secure_registry.token(users["reader_name"], users["reader"], f"repository:{first}:pull,push")
    with secure_registry.bearer(token) as client:
        assert client.post(f"/v2/{first}/blobs/uploads/").status_code == 403


def test_secrets_never_reach_the_log_or_the_database(secure_registry: SecureRegistry, users: dict[str, str]) -> None:
    """Runs last in this module: every password, robot secret, PAT and token used so far."""
    # a failed login and a refused token too, which are the likeliest to be logged
    with secure_registry.client() as client:
        client.get("/v2/", auth=(users["dev_name"], "a-wrong-password-123"))
        client.get("/v2/", headers={"authorization": "Bearer not.a-valid.token"})
    secure_registry.secrets.add("a-wrong-password-123")
    log = secure_registry.server.log_text()
    stored = b"".join(p.read_bytes() for p in secure_registry.server.data.glob("metadata.sqlite3*"))
    assert secure_registry.secrets, "the suite used no secrets?"
    for secret in secure_registry.secrets:
        assert secret not in log, "a secret is in the server log"
        assert secret.encode() not in stored, "a secret is stored in clear"
    assert "auth.login" in secure_registry.cli("audit", "--action", "auth.login").stdout
