"""The pure parts of access control: scopes, grants and their intersection."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cargohold.auth.scopes import Grant, Scope, ScopeError, intersect
from cargohold.auth.service import Authority, Identity
from cargohold.auth.store import Principal
from cargohold.config import load_config
from cargohold.storage.events import Actor


def scope(text: str) -> Scope:
    return Scope.parse(text)


def test_scope_parsing() -> None:
    assert scope("repository:team/app:pull,push") == Scope("repository", "team/app", frozenset({"pull", "push"}))
    # a name with a port in it, and a resource class
    assert scope("repository:localhost:5000/app:pull").name == "localhost:5000/app"
    assert scope("repository(plugin):team/app:pull").type == "repository"
    assert scope("registry:catalog:*") == Scope("registry", "catalog", frozenset({"*"}))
    assert [str(s) for s in Scope.parse_many(["repository:a:pull repository:b:push"])] == [
        "repository:a:pull",
        "repository:b:push",
    ]
    for bad in ("", "repository", "repository:app", "repository::pull", "repository:app:", "REPO:app:pull", "a:b:PULL"):
        with pytest.raises(ScopeError):
            Scope.parse(bad)


def test_grant_parsing() -> None:
    assert Grant.parse("team/*:pull,push") == Grant("team/*", frozenset({"pull", "push"}))
    assert Grant.parse("repository:team/*:pull") == Grant("team/*", frozenset({"pull"}))
    assert Grant.parse("*:*").actions == frozenset({"pull", "push", "delete"})
    for bad in ("team/*", ":pull", "team/*:", "team/*:fly"):
        with pytest.raises(ScopeError):
            Grant.parse(bad)


def test_intersection_grants_only_what_is_allowed() -> None:
    grants = (Grant.parse("team/*:pull,push"), Grant.parse("public/*:pull"))
    asked = Scope.parse_many(
        ["repository:team/app:pull,push,delete", "repository:public/x:pull,push", "repository:prod/y:pull",
         "registry:catalog:*", "registry:admin:*"]
    )  # fmt: skip
    granted = {str(s) for s in intersect(asked, grants, admin=False)}
    assert granted == {"repository:team/app:pull,push", "repository:public/x:pull"}
    admin = {str(s) for s in intersect(asked, (), admin=True)}
    assert "registry:admin:*" in admin and "registry:catalog:*" in admin
    assert "repository:prod/y:pull" in admin


def test_a_narrowed_token_never_exceeds_its_owner() -> None:
    owner = Principal(1, "alice", "user", False, (), None, 0.0)
    identity = Identity(owner, (Grant.parse("team/*:pull,push"),), limit=(Grant.parse("*:pull,push,delete"),))
    assert identity.actions("team/app") == frozenset({"pull", "push"})
    assert identity.actions("prod/app") == frozenset()
    admin = Principal(2, "root", "user", True, (), None, 0.0)
    narrowed = Identity(admin, (), limit=(Grant.parse("team/*:pull"),))
    assert narrowed.actions("team/app") == frozenset({"pull"})
    assert not narrowed.admin, "a narrowed admin token is not an admin credential"
    assert narrowed.grant(Scope.parse_many(["registry:admin:*"])) == []


@given(st.text(max_size=200))
def test_scope_parser_accepts_or_refuses_cleanly(text: str) -> None:
    try:
        parsed = Scope.parse(text)
    except ScopeError:
        return
    assert Scope.parse(str(parsed)) == parsed


@given(st.lists(st.text(max_size=60), max_size=5), st.booleans())
def test_intersection_never_grants_outside_the_grants(texts: list[str], admin: bool) -> None:
    grants = (Grant.parse("team/*:pull"),)
    try:
        asked = Scope.parse_many(texts)
    except ScopeError:
        return
    for granted in intersect(asked, grants, admin=False):
        assert granted.type == "repository" and granted.name.startswith("team/")
        assert granted.actions == frozenset({"pull"})


def test_a_credential_change_commits_with_its_audit_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If its audit event cannot be written, a new robot is not there at all: no principal, no
    grant, no secret (storage/events.py: a change and its event share one transaction)."""
    authority = Authority.open(load_config(environ={}, data=tmp_path))
    try:
        ctx = Actor("test")
        authority.create_robot(ctx, "kept", (Grant.parse("team/*:pull"),), None)

        def refuse(*args: object, **kwargs: object) -> None:
            raise RuntimeError("the audit trail is unwritable")

        monkeypatch.setattr(authority.store, "record", refuse)
        with pytest.raises(RuntimeError):
            authority.create_robot(ctx, "lost", (Grant.parse("team/*:push"),), None)
        monkeypatch.undo()
        assert [p.name for p in authority.store.principals()] == ["kept"]
        assert authority.store.policies("robot:lost") == []
        assert [e.target for e in authority.store.events(action="robot.")] == ["kept"]
    finally:
        authority.close()


def test_processes_starting_together_all_get_the_one_secret(tmp_path: Path) -> None:
    """Worker processes that start at once race to make the secret file: every one of them reads
    the same whole secret (none an empty file another was still writing)."""
    from concurrent.futures import ProcessPoolExecutor

    from cargohold.auth.sealing import load_secret

    for attempt in range(5):
        path = tmp_path / f"round-{attempt}" / "secret.key"
        with ProcessPoolExecutor(max_workers=6) as pool:
            secrets = list(pool.map(load_secret, [path] * 24))
        assert len(set(secrets)) == 1 and len(secrets[0]) == 32
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert [p.name for p in path.parent.iterdir()] == ["secret.key"], "no partial file left"
