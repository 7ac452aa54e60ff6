"""Retention policies: what goes, what stays, the preview, and the tag history."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cargohold.oci.rules import RetentionPolicy
from tests.support.oci import OCI_MANIFEST, make_image, push_image
from tests.support.servers import Cargohold

DAY = 86400.0


def test_policy_keeps_patterns_recent_and_young_tags() -> None:
    policy = RetentionPolicy("team/*", keep_last=2, keep=("v*",), older_than=10 * DAY)
    now = 100 * DAY
    tags = [("v1.0", 1 * DAY), ("old-a", 2 * DAY), ("old-b", 3 * DAY), ("young", 95 * DAY), ("newest", 99 * DAY)]
    tags.append(("second", 98 * DAY))
    # newest and second are the 2 most recent; young is younger than 10 days; v1.0 matches keep.
    assert policy.doomed(tags, now, lambda tag: None) == ["old-a", "old-b"]
    assert policy.doomed(tags, now, lambda tag: "rule" if tag == "old-a" else None) == ["old-b"]
    assert RetentionPolicy("x", keep_last=0).doomed(tags, now, lambda tag: None) == [
        name for name, _ in sorted(tags, key=lambda t: t[1])
    ]
    assert RetentionPolicy("x", keep=("*",)).doomed(tags, now, lambda tag: None) == []


def cargohold(data: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cargohold", *args, "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_retention_through_the_cli(fresh_cargohold: Cargohold) -> None:
    image = make_image()
    tags = ["v1", "nightly-1", "nightly-2", "nightly-3", "nightly-4", "release-9"]
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        push_image(c, "team/app", image, tags[0])
        for tag in tags[1:]:
            headers = {"content-type": OCI_MANIFEST}
            assert c.put(f"/v2/team/app/manifests/{tag}", content=image.manifest, headers=headers).status_code == 201
        push_image(c, "other/app", image, "nightly-1")
    # Pretend the tags were pushed a day apart, v1 first.
    with sqlite3.connect(fresh_cargohold.data / "metadata.sqlite3") as db:
        for age, tag in enumerate(reversed(tags)):
            db.execute("UPDATE tag SET updated = ? WHERE name = ?", (time.time() - (age + 1) * DAY, tag))
    policies = [{"repositories": "team/*", "keep_last": 2, "keep": ["v*"], "older_than": "36h"}]
    env = {"CARGOHOLD_RETENTION": json.dumps(policies), "CARGOHOLD_IMMUTABLE_TAGS": "*:release-*"}

    preview = cargohold(fresh_cargohold.data, "retention", "--dry-run", env=env)
    assert preview.returncode == 0, preview.stderr
    # release-9 (newest) and nightly-4 are the two most recent; v1 matches keep; release-* is immutable.
    assert "team/app: would delete nightly-1, nightly-2, nightly-3" in preview.stdout
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        assert len(c.get("/v2/team/app/tags/list").json()["tags"]) == 6

    applied = cargohold(fresh_cargohold.data, "retention", env=env)
    assert applied.returncode == 0, applied.stderr
    assert "deleted 3 tag(s) in 1 repositories" in applied.stdout
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        assert c.get("/v2/team/app/tags/list").json()["tags"] == ["nightly-4", "release-9", "v1"]
        assert c.get("/v2/other/app/tags/list").json()["tags"] == ["nightly-1"]
    with sqlite3.connect(fresh_cargohold.data / "metadata.sqlite3") as db:
        history = db.execute(
            "SELECT name FROM tag_event WHERE repo = 'team/app' AND new_digest IS NULL ORDER BY name"
        ).fetchall()
    assert [row[0] for row in history] == ["nightly-1", "nightly-2", "nightly-3"]

    none = cargohold(fresh_cargohold.data, "retention", env={"CARGOHOLD_RETENTION": "[]"})
    assert none.returncode == 1
    assert "no retention policies configured" in none.stderr
