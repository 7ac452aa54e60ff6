"""Principals, groups, policies, credentials, audit events and login failures, in SQLite.

The tables live in the registry's metadata database (one file to back up) but this store
has its own connection: auth writes never wait inside a push's transaction.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from ..storage.events import Actor, AuditEvent, query_events, record_event
from ..storage.sql import Database, Executor
from .scopes import Grant

# What a remembered login rests on: ("password", principal id, hash) or ("credential", id, "").
Validity = tuple[str, int, str]

_PRINCIPAL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
ANONYMOUS = "anonymous"
AUTHENTICATED = "authenticated"


class AuthStoreError(ValueError):
    """A request the store refuses, said so a person can fix it."""


@dataclass(frozen=True, slots=True)
class Principal:
    id: int
    name: str
    kind: str
    admin: bool
    groups: tuple[str, ...]
    expires: float | None
    created: float
    description: str = ""

    @property
    def subject(self) -> str:
        return f"{self.kind}:{self.name}"

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and self.expires <= (now or time.time())

    def as_json(self, scopes: list[str]) -> dict[str, Any]:
        """How the CLI's --json and the management API both show a user or robot."""
        return {
            "name": self.name,
            "kind": self.kind,
            "admin": self.admin,
            "groups": list(self.groups),
            "created": self.created,
            "expires": self.expires,
            "description": self.description,
            "scopes": scopes,
        }


@dataclass(frozen=True, slots=True)
class Credential:
    id: int
    principal: str
    kind: str
    name: str
    grants: tuple[Grant, ...] | None
    created: float
    expires: float | None
    revoked: float | None
    last_used: float | None

    def as_json(self) -> dict[str, Any]:
        """How the CLI's --json and the management API both show a credential (never its secret)."""
        return {
            "id": self.id,
            "owner": self.principal,
            "kind": self.kind,
            "name": self.name,
            "scopes": None if self.grants is None else [str(g) for g in self.grants],
            "created": self.created,
            "expires": self.expires,
            "revoked": self.revoked,
            "last_used": self.last_used,
        }


@dataclass(frozen=True, slots=True)
class Policy:
    id: int
    subject: str
    grant: Grant

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "subject": self.subject, "scope": str(self.grant)}


def validate_principal_name(name: str) -> str:
    if not _PRINCIPAL_NAME.match(name) or name in (ANONYMOUS, AUTHENTICATED):
        raise AuthStoreError(
            f"{name[:80]!r} is not a usable name: lowercase letters, digits, '.', '_' or '-', at most 64"
            " characters, not 'anonymous' or 'authenticated'"
        )
    return name


def validate_subject(subject: str) -> str:
    if subject in (ANONYMOUS, AUTHENTICATED):
        return subject
    kind, _, name = subject.partition(":")
    if kind not in ("user", "robot", "group"):
        raise AuthStoreError(
            f"policy subject {subject[:80]!r} must be user:NAME, robot:NAME, group:NAME, {ANONYMOUS} or {AUTHENTICATED}"
        )
    validate_principal_name(name)
    return subject


def _grants_json(grants: tuple[Grant, ...] | None) -> str | None:
    return None if grants is None else json.dumps([str(g) for g in grants])


def _grants_from(text: str | None) -> tuple[Grant, ...] | None:
    return None if text is None else tuple(Grant.parse(g) for g in json.loads(text))


class AuthStore:
    """Principals, groups, policies, credentials and login failures, in SQL both SQLite and
    PostgreSQL run, over the process's database handle (`storage.backends.open_database`)."""

    def __init__(self, database: Database, owned: bool = True) -> None:
        self.database = database
        self._db = database.executor
        self._owned = owned

    def close(self) -> None:
        if self._owned:
            self.database.close()

    def _tx(self) -> AbstractContextManager[Executor]:
        return self.database.transaction()

    def change(self) -> AbstractContextManager[Executor]:
        """One transaction around several calls: a change and its audit event commit together."""
        return self._tx()

    # --- principals ------------------------------------------------------------------------------------------------

    def add_principal(
        self,
        name: str,
        kind: str,
        *,
        password_hash: str | None = None,
        admin: bool = False,
        groups: tuple[str, ...] = (),
        expires: float | None = None,
        description: str = "",
    ) -> Principal:
        validate_principal_name(name)
        for group in groups:
            validate_principal_name(group)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM principal WHERE name = ?", (name,)).fetchone():
                raise AuthStoreError(f"a user or robot named {name!r} already exists")
            principal_id = db.execute(
                "INSERT INTO principal(name, kind, password_hash, admin, description, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (name, kind, password_hash, int(admin), description, time.time(), expires),
            ).fetchone()[0]
            db.executemany(
                "INSERT INTO group_member(group_name, principal_id) VALUES (?, ?)",
                [(g, principal_id) for g in sorted(set(groups))],
            )
        principal = self.principal(name)
        assert principal is not None
        return principal

    def _principal_from(self, row: tuple) -> Principal:
        groups = tuple(
            g
            for (g,) in self._db.execute(
                "SELECT group_name FROM group_member WHERE principal_id = ? ORDER BY 1", (row[0],)
            )
        )
        return Principal(row[0], row[1], row[2], bool(row[3]), groups, row[4], row[5], row[6])

    _PRINCIPAL_COLUMNS = "id, name, kind, admin, expires, created, description"

    def principal(self, name: str, kind: str | None = None) -> Principal | None:
        if not _PRINCIPAL_NAME.match(name):  # no such principal can exist (and NUL is no text to PostgreSQL)
            return None
        row = self._db.execute(f"SELECT {self._PRINCIPAL_COLUMNS} FROM principal WHERE name = ?", (name,)).fetchone()
        if row is None or (kind is not None and row[2] != kind):
            return None
        return self._principal_from(row)

    def principals(self, kind: str | None = None) -> list[Principal]:
        rows = self._db.execute(
            f"SELECT {self._PRINCIPAL_COLUMNS} FROM principal WHERE CAST(? AS TEXT) IS NULL OR kind = ? ORDER BY name",
            (kind, kind),
        ).fetchall()
        return [self._principal_from(row) for row in rows]

    def password_hash(self, name: str) -> tuple[Principal, str] | None:
        if not _PRINCIPAL_NAME.match(name):
            return None
        row = self._db.execute(
            "SELECT password_hash FROM principal WHERE name = ? AND kind = 'user'", (name,)
        ).fetchone()
        principal = self.principal(name, "user")
        if row is None or row[0] is None or principal is None:
            return None
        return principal, row[0]

    def set_password(self, name: str, password_hash: str) -> None:
        with self._tx() as db:
            if (
                db.execute(
                    "UPDATE principal SET password_hash = ? WHERE name = ? AND kind = 'user'", (password_hash, name)
                ).rowcount
                == 0
            ):
                raise AuthStoreError(f"there is no user named {name!r}")

    def remove_principal(self, name: str, kind: str) -> None:
        with self._tx() as db:
            if db.execute("DELETE FROM principal WHERE name = ? AND kind = ?", (name, kind)).rowcount == 0:
                raise AuthStoreError(f"there is no {kind} named {name!r}")
            db.execute("DELETE FROM policy WHERE subject = ?", (f"{kind}:{name}",))

    def still_valid(self, validity: Validity) -> bool:
        kind, row_id, stamp = validity
        now = time.time()
        if kind == "password":
            row = self._db.execute(
                "SELECT password_hash FROM principal WHERE id = ? AND (expires IS NULL OR expires > ?)", (row_id, now)
            ).fetchone()
            return row is not None and row[0] == stamp
        row = self._db.execute(
            "SELECT 1 FROM credential c JOIN principal p ON p.id = c.principal_id WHERE c.id = ? "
            "AND c.revoked IS NULL AND (c.expires IS NULL OR c.expires > ?) AND (p.expires IS NULL OR p.expires > ?)",
            (row_id, now, now),
        ).fetchone()
        return row is not None

    def count_principals(self) -> int:
        return self._db.execute("SELECT count(*) FROM principal").fetchone()[0]

    # --- policies --------------------------------------------------------------------------------------------------

    def add_policy(self, subject: str, grant: Grant) -> Policy:
        validate_subject(subject)
        with self._tx() as db:
            db.execute(
                "INSERT INTO policy(subject, pattern, actions, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(subject, pattern) DO UPDATE SET actions = excluded.actions",
                (subject, grant.pattern, ",".join(sorted(grant.actions)), time.time()),
            )
            row = db.execute(
                "SELECT id FROM policy WHERE subject = ? AND pattern = ?", (subject, grant.pattern)
            ).fetchone()
        return Policy(row[0], subject, grant)

    def remove_policy(self, policy_id: int) -> None:
        with self._tx() as db:
            if db.execute("DELETE FROM policy WHERE id = ?", (policy_id,)).rowcount == 0:
                raise AuthStoreError(f"there is no policy {policy_id}")

    def policies(self, subject: str | None = None) -> list[Policy]:
        rows = self._db.execute(
            "SELECT id, subject, pattern, actions FROM policy WHERE CAST(? AS TEXT) IS NULL OR subject = ? "
            "ORDER BY subject, pattern",
            (subject, subject),
        )
        return [Policy(i, s, Grant(p, frozenset(a.split(",")))) for i, s, p, a in rows]

    def grants_for(self, principal: Principal | None) -> tuple[Grant, ...]:
        """Everything the policies allow this principal (None = anonymous). Robots get only their own."""
        if principal is None:
            subjects = [ANONYMOUS]
        elif principal.kind == "robot":
            subjects = [principal.subject]
        else:
            subjects = [ANONYMOUS, AUTHENTICATED, principal.subject, *(f"group:{g}" for g in principal.groups)]
        marks = ",".join("?" * len(subjects))
        rows = self._db.execute(f"SELECT pattern, actions FROM policy WHERE subject IN ({marks})", subjects)
        return tuple(Grant(p, frozenset(a.split(","))) for p, a in rows)

    # --- credentials -----------------------------------------------------------------------------------------------

    def add_credential(
        self,
        principal: Principal,
        kind: str,
        name: str,
        secret_digest: str,
        *,
        grants: tuple[Grant, ...] | None = None,
        expires: float | None = None,
    ) -> int:
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO credential(principal_id, kind, name, secret_digest, grants, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (principal.id, kind, name, secret_digest, _grants_json(grants), time.time(), expires),
            ).fetchone()
        return int(row[0])

    def find_credential(self, secret_digest: str) -> tuple[Principal, Credential] | None:
        """The live credential with this secret digest, and its principal; None when revoked or expired."""
        row = self._db.execute(
            "SELECT c.id, p.name, c.kind, c.name, c.grants, c.created, c.expires, c.revoked, c.last_used "
            "FROM credential c JOIN principal p ON p.id = c.principal_id WHERE c.secret_digest = ?",
            (secret_digest,),
        ).fetchone()
        if row is None:
            return None
        credential = Credential(row[0], row[1], row[2], row[3], _grants_from(row[4]), *row[5:])
        principal = self.principal(credential.principal)
        now = time.time()
        if principal is None or principal.expired(now) or credential.revoked is not None:
            return None
        if credential.expires is not None and credential.expires <= now:
            return None
        if credential.last_used is None or credential.last_used < now - 60:  # at most one write a minute
            with self._tx() as db:
                db.execute("UPDATE credential SET last_used = ? WHERE id = ?", (now, credential.id))
        return principal, credential

    def credentials(
        self, principal: str | None = None, kinds: tuple[str, ...] = ("robot", "token")
    ) -> list[Credential]:
        marks = ",".join("?" * len(kinds))
        rows = self._db.execute(
            "SELECT c.id, p.name, c.kind, c.name, c.grants, c.created, c.expires, c.revoked, c.last_used "
            f"FROM credential c JOIN principal p ON p.id = c.principal_id WHERE c.kind IN ({marks}) "
            "AND (CAST(? AS TEXT) IS NULL OR p.name = ?) ORDER BY c.id",
            (*kinds, principal, principal),
        )
        return [Credential(r[0], r[1], r[2], r[3], _grants_from(r[4]), *r[5:]) for r in rows]

    def revoke_credential(self, credential_id: int, owner: str | None = None) -> Credential:
        now = time.time()
        with self._tx() as db:
            updated = db.execute(
                "UPDATE credential SET revoked = ? WHERE id = ? AND revoked IS NULL "
                "AND (CAST(? AS TEXT) IS NULL OR principal_id = (SELECT id FROM principal WHERE name = ?))",
                (now, credential_id, owner, owner),
            ).rowcount
        if not updated:
            raise AuthStoreError(f"there is no live credential {credential_id}" + (f" of {owner}" if owner else ""))
        return next(c for c in self.credentials(owner, ("robot", "token", "refresh")) if c.id == credential_id)

    def revoke_credentials_of(self, principal: Principal, kinds: tuple[str, ...]) -> int:
        marks = ",".join("?" * len(kinds))
        with self._tx() as db:
            return db.execute(
                f"UPDATE credential SET revoked = ? WHERE principal_id = ? AND revoked IS NULL AND kind IN ({marks})",
                (time.time(), principal.id, *kinds),
            ).rowcount

    # --- audit -----------------------------------------------------------------------------------------------------

    def record(self, actor: Actor, action: str, target: str, outcome: str = "ok", detail: str = "") -> None:
        with self._tx() as db:
            record_event(db, actor, action, target, outcome, detail)

    def events(self, **filters: Any) -> list[AuditEvent]:
        return query_events(self._db, **filters)

    # --- login failures --------------------------------------------------------------------------------------------

    def retry_after(self, keys: list[str], limit: int, window: float) -> float:
        """Seconds until a login may be tried again, 0 when none of `keys` is over `limit` failures."""
        now = time.time()
        wait = 0.0
        for key in keys:
            row = self._db.execute("SELECT window_start, count FROM login_failure WHERE key = ?", (key,)).fetchone()
            if row and row[1] >= limit and row[0] + window > now:
                wait = max(wait, row[0] + window - now)
        return wait

    def note_failure(self, keys: list[str], window: float) -> None:
        now = time.time()
        with self._tx() as db:
            # Counters whose window has passed say nothing; dropping them keeps a spray of
            # made-up user names from growing the table beyond one window's worth.
            db.execute("DELETE FROM login_failure WHERE window_start + ? <= ?", (window, now))
            for key in keys:
                db.execute(
                    "INSERT INTO login_failure(key, window_start, count) VALUES (?, ?, 1) "
                    "ON CONFLICT(key) DO UPDATE SET "  # the row already there, named (PostgreSQL needs it)
                    "count = CASE WHEN login_failure.window_start + ? > ? THEN login_failure.count + 1 ELSE 1 END, "
                    "window_start = CASE WHEN login_failure.window_start + ? > ? "
                    "THEN login_failure.window_start ELSE ? END",
                    (key, now, window, now, window, now, now),
                )
