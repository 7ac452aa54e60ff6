"""The cargohold client against cargohold's own access control: token flow over TLS, end to end."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from tests.support.auth import SecureRegistry
from tests.support.cli import CargoholdCLI
from tests.support.clients import build_umoci_image, layout_digest


def test_client_login_push_pull_copy_through_our_token_server(secure_registry: SecureRegistry, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    user, password = f"shipper-{suffix}", f"shipper-pw-{suffix}"
    secure_registry.add_user(user, password, "team/*:pull,push,delete")
    robot = f"ci-client-{suffix}"
    secret = secure_registry.create_robot(robot, "repository:team/*:pull,push")
    layout = tmp_path / "layout"
    digest = build_umoci_image(layout, "v1", [{"a.txt": uuid.uuid4().bytes}, {"b.bin": os.urandom(20_000)}])
    host, ca = secure_registry.host, ["--ca-cert", str(secure_registry.ca)]
    source, target = f"team/client-{suffix}", f"team/client-copy-{suffix}"

    ch = CargoholdCLI(tmp_path / "home")
    assert "refused" in ch.fails("login", "-u", user, "-p", "wrong-password", host, *ca)
    ch.run("login", "-u", user, "--password-stdin", host, *ca, input=password)
    config = (ch.config_dir / "config.json").read_text()
    assert host in config

    assert ch.json("push", f"oci:{layout}:v1", f"{host}/{source}:v1", *ca)["digest"] == digest
    copied = ch.json("copy", f"{host}/{source}:v1", f"{host}/{target}:v1", *ca)
    assert copied["blobs"]["mounted"] == 3 and copied["blobs"]["transferred"] == 0  # config and two layers
    assert ch.json("inspect", f"{host}/{target}:v1", *ca)["digest"] == digest
    out = tmp_path / "out"
    ch.run("pull", f"{host}/{target}:v1", f"oci:{out}:v1", *ca)
    assert layout_digest(out, "v1") == digest
    denied = ch.fails("push", f"oci:{layout}:v1", f"{host}/prod/app-{suffix}:v1", "--retries", "0", *ca)
    assert "denied" in denied.lower(), denied

    # a CI robot with its secret: pushes inside its scope, refused outside it
    ci = CargoholdCLI(tmp_path / "ci")
    ci.run("login", "-u", robot, "--password-stdin", host, *ca, input=secret)
    assert ci.json("push", f"oci:{layout}:v1", f"{host}/team/robot-{suffix}:v1", *ca)["digest"] == digest
    refused = ci.fails("push", f"oci:{layout}:v1", f"{host}/other/robot-{suffix}:v1", "--retries", "0", *ca)
    assert "denied" in refused.lower(), refused
    assert "denied" in ci.fails("rm", f"{host}/team/robot-{suffix}:v1", "--retries", "0", *ca).lower()
    secure_registry.secrets |= {password, secret}
