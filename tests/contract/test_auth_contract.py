"""What the access-control store guarantees on every database: principals with their groups,
policies, credentials from creation to revocation, the audit trail's filters and the shared
login-failure counters."""

from __future__ import annotations

import time

import pytest

from cargohold.auth.scopes import Grant
from cargohold.auth.store import AuthStore, AuthStoreError
from cargohold.storage.events import Actor
from cargohold.storage.sql import Database


@pytest.fixture
def store(database: Database) -> AuthStore:
    return AuthStore(database)


def test_principals_groups_and_cascades(store: AuthStore) -> None:
    alice = store.add_principal("alice", "user", password_hash="h1", groups=("devs", "ops"))
    store.add_principal("ci", "robot", description="the build")
    assert alice.groups == ("devs", "ops") and not alice.admin
    assert [p.name for p in store.principals()] == ["alice", "ci"]
    assert [p.name for p in store.principals("robot")] == ["ci"]
    with pytest.raises(AuthStoreError):
        store.add_principal("alice", "user")
    assert store.password_hash("alice") == (alice, "h1")
    store.add_credential(alice, "token", "laptop", "digest-1")
    store.remove_principal("alice", "user")
    assert store.principal("alice") is None
    assert store.credentials() == [], "a principal's credentials go with it"
    assert store.count_principals() == 1


def test_policies_by_subject(store: AuthStore) -> None:
    store.add_policy("group:devs", Grant.parse("team/*:pull,push"))
    store.add_policy("anonymous", Grant.parse("public/*:pull"))
    store.add_policy("group:devs", Grant.parse("team/*:pull"))  # the same pattern again: replaced
    assert [(p.subject, str(p.grant)) for p in store.policies()] == [
        ("anonymous", "public/*:pull"),
        ("group:devs", "team/*:pull"),
    ]
    assert [str(p.grant) for p in store.policies("anonymous")] == ["public/*:pull"]
    dev = store.add_principal("dev", "user", groups=("devs",))
    assert sorted(str(g) for g in store.grants_for(dev)) == ["public/*:pull", "team/*:pull"]
    assert [str(g) for g in store.grants_for(None)] == ["public/*:pull"]


def test_credentials_from_creation_to_revocation(store: AuthStore) -> None:
    owner = store.add_principal("owner", "user")
    first = store.add_credential(owner, "token", "a", "digest-a", grants=(Grant.parse("x/*:pull"),))
    second = store.add_credential(owner, "token", "b", "digest-b", expires=time.time() - 1)
    assert first != second
    found = store.find_credential("digest-a")
    assert found is not None and found[1].id == first and [str(g) for g in found[1].grants or ()] == ["x/*:pull"]
    assert store.find_credential("digest-b") is None, "expired"
    assert [c.id for c in store.credentials()] == [first, second]
    assert [c.id for c in store.credentials("owner")] == [first, second]
    assert store.revoke_credential(first, "owner").revoked is not None
    assert store.find_credential("digest-a") is None, "revoked"
    with pytest.raises(AuthStoreError):
        store.revoke_credential(first)


def test_audit_filters(store: AuthStore) -> None:
    store.record(Actor("alice", "127.0.0.1", "r1"), "user.create", "bob")
    store.record(Actor("bob", "127.0.0.1", "r2"), "manifest.push", "team/app@sha256:1")
    store.record(Actor("bob", "127.0.0.1", "r3"), "manifest.delete", "team/app@sha256:1")
    assert [e.action for e in store.events()] == ["manifest.delete", "manifest.push", "user.create"]
    assert [e.action for e in store.events(actor="bob", action="manifest.")] == ["manifest.delete", "manifest.push"]
    assert [e.target for e in store.events(target="bob")] == ["bob"]
    assert store.events(since=time.time() + 60) == []


def test_login_failures_count_within_their_window(store: AuthStore) -> None:
    keys = ["user:mallory", "address:10.0.0.9"]
    for _ in range(3):
        store.note_failure(keys, window=60)
    assert store.retry_after(keys, limit=3, window=60) > 50
    assert store.retry_after(keys, limit=4, window=60) == 0
    assert store.retry_after(["user:someone-else"], limit=1, window=60) == 0
