"""Tag immutability rules and repository delete, through the HTTP API and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.support.inprocess import InProcessRegistry
from tests.support.oci import OCI_MANIFEST, error_code, make_image, push_blob, push_image, sha256
from tests.support.store import assert_store_consistent


@pytest.fixture
def guarded(registry_app_with: Callable[[dict[str, str]], InProcessRegistry]) -> InProcessRegistry:
    return registry_app_with({"CARGOHOLD_IMMUTABLE_TAGS": "prod/*:v*,*:release-*"})


def cargohold(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cargohold", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_immutable_tag_cannot_move_or_go(guarded: InProcessRegistry) -> None:
    first, second = make_image(), make_image()
    with guarded.client() as c:
        push_image(c, "prod/app", first, "v1")
        # Pushing the same content again is fine; moving the tag is not.
        push_image(c, "prod/app", first, "v1")
        for blob in [second.config, *second.layers]:
            push_blob(c, "prod/app", blob)
        moved = c.put("/v2/prod/app/manifests/v1", content=second.manifest, headers={"content-type": OCI_MANIFEST})
        assert moved.status_code == 403
        assert error_code(moved) == "DENIED"
        assert "rule 'prod/*:v*'" in moved.json()["errors"][0]["message"]
        assert c.get("/v2/prod/app/manifests/v1").content == first.manifest

        for reference in ("v1", first.digest):
            refused = c.delete(f"/v2/prod/app/manifests/{reference}")
            assert refused.status_code == 403, reference
            assert error_code(refused) == "DENIED"
        assert c.get("/v2/prod/app/manifests/v1").status_code == 200

        # Tags no rule names stay mutable, in the same repository and elsewhere.
        push_image(c, "prod/app", first, "latest")
        push_image(c, "prod/app", second, "latest")
        assert c.delete("/v2/prod/app/manifests/latest").status_code == 202
        push_image(c, "dev/app", first, "v1")
        push_image(c, "dev/app", second, "v1")
        push_image(c, "dev/app", first, "release-1")
        assert c.delete("/v2/dev/app/manifests/release-1").status_code == 403
        history = c.get("/v2/prod/app/tags/list").json()["tags"]
        assert history == ["v1"]


def test_repository_delete(guarded: InProcessRegistry) -> None:
    shared = make_image()
    with guarded.client() as c:
        push_image(c, "team/old", shared, "latest")
        push_image(c, "team/keep", shared, "latest")
        location = c.post("/v2/team/old/blobs/uploads/").headers["location"]
        c.patch(location, content=b"half an upload")
    env = {"CARGOHOLD_IMMUTABLE_TAGS": "prod/*:v*"}
    data = str(guarded.data)
    result = cargohold("repo", "rm", "team/old", "--data", data, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "deleted team/old: 1 tag(s), 1 manifest(s), 1 upload session(s)"
    with guarded.client() as c:
        gone = c.get("/v2/team/old/tags/list")
        assert gone.status_code == 404
        assert error_code(gone) == "NAME_UNKNOWN"
        assert c.head(f"/v2/team/old/blobs/{sha256(shared.config)}").status_code == 404
        assert c.get(location).status_code == 404
        assert "team/old" not in c.get("/v2/_catalog").json()["repositories"]
        # The other repository sharing those blobs is untouched.
        assert c.get("/v2/team/keep/manifests/latest").content == shared.manifest
        assert c.get(f"/v2/team/keep/blobs/{sha256(shared.layers[0])}").content == shared.layers[0]
    assert_store_consistent(guarded.data)

    missing = cargohold("repo", "rm", "team/old", "--data", data)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: no repository team/old"
    bad = cargohold("repo", "rm", "Team/Old", "--data", data)
    assert bad.returncode == 1
    assert "invalid repository name" in bad.stderr


def test_repository_delete_respects_immutable_tags(guarded: InProcessRegistry) -> None:
    with guarded.client() as c:
        push_image(c, "prod/web", make_image(), "v2")
    env = {"CARGOHOLD_IMMUTABLE_TAGS": "prod/*:v*"}
    refused = cargohold("repo", "rm", "prod/web", "--data", str(guarded.data), env=env)
    assert refused.returncode == 1
    assert "tag v2 of prod/web is immutable (rule 'prod/*:v*'); use --force" in refused.stderr
    forced = cargohold("repo", "rm", "prod/web", "--force", "--data", str(guarded.data), env=env)
    assert forced.returncode == 0, forced.stderr
