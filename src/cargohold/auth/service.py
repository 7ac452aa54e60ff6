"""The authority: checks credentials, decides grants, issues tokens and records what it did.

One object used by the registry's request path, its token endpoint, the management API and
the CLI, so that every way of changing a credential is audited the same way.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..storage.backends import open_database
from ..storage.events import Actor
from ..storage.sql import Database
from . import credentials as cred
from .keys import KeyRing
from .scopes import CATALOG, REPOSITORY_ACTIONS, Grant, Scope, allowed_actions, intersect, may_list_catalog
from .sealing import load_secret
from .store import AuthStore, AuthStoreError, Principal, Validity
from .tokens import TokenService

# A successful basic login is remembered this long (each reuse re-checked in one query, see
# login); grants read with it, and anonymous grants, may lag a policy change by as much.
LOGIN_CACHE_SECONDS = 30.0
GRANT_CACHE_SECONDS = 10.0


class AuthFailed(Exception):
    """Wrong, unknown, expired or revoked credentials. The message never says which."""


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, int(retry_after + 0.999))
        super().__init__(f"too many failed logins; try again in {self.retry_after} s")


@dataclass(frozen=True, slots=True)
class Identity:
    """A principal (None = anonymous) with what its policies allow, narrowed by the credential used."""

    principal: Principal | None
    grants: tuple[Grant, ...]
    limit: tuple[Grant, ...] | None = None

    @property
    def name(self) -> str:
        return self.principal.name if self.principal else "anonymous"

    @property
    def admin(self) -> bool:
        return self.principal is not None and self.principal.admin and self.limit is None

    def actions(self, repository: str) -> frozenset[str]:
        allowed = frozenset(REPOSITORY_ACTIONS) if self.principal and self.principal.admin else frozenset()
        allowed |= allowed_actions(self.grants, repository)
        if self.limit is not None:
            allowed &= allowed_actions(self.limit, repository)
        return allowed

    def grant(self, requested: list[Scope]) -> list[Scope]:
        """The part of `requested` this identity may have."""
        granted = intersect(requested, self.grants, self.principal is not None and self.principal.admin)
        if self.limit is None:
            return granted
        narrowed = []
        for scope in granted:
            if scope.type == "repository":
                actions = scope.actions & allowed_actions(self.limit, scope.name)
            elif (scope.type, scope.name) == CATALOG:
                actions = scope.actions if may_list_catalog(self.limit) else frozenset()
            else:
                actions = frozenset()
            if actions:
                narrowed.append(Scope(scope.type, scope.name, actions))
        return narrowed


@dataclass
class AuthSettings:
    service: str
    issuer: str
    token_ttl: float
    refresh_ttl: float
    max_failures: int
    failure_window: float

    @classmethod
    def of(cls, config: Config) -> AuthSettings:
        return cls(
            service=config.auth_service,
            issuer=config.auth_service,
            token_ttl=config.token_ttl,
            refresh_ttl=config.refresh_token_ttl,
            max_failures=config.auth_max_failures,
            failure_window=config.auth_failure_window,
        )


@dataclass
class Authority:
    store: AuthStore
    keys: KeyRing
    settings: AuthSettings

    def __post_init__(self) -> None:
        self.tokens = TokenService(self.keys, self.settings.issuer, self.settings.token_ttl)
        self._logins: dict[bytes, tuple[Identity, Validity, float]] = {}
        self._subject_grants: dict[str, tuple[Identity | None, float]] = {}  # "" = anonymous
        # Remembered logins are keyed by a keyed hash, so a memory dump shows no password digests.
        self._cache_key = secrets.token_bytes(32)

    @classmethod
    def open(cls, config: Config, database: Database | None = None) -> Authority:
        """Over the process's database handle when given (its owner closes it), else its own."""
        store = AuthStore(
            database or open_database(config.database_target, config.database_timeout), owned=database is None
        )
        keys = KeyRing(store.database, load_secret(config.secret_path, create=True), config.data / "keys")
        return cls(store, keys.ensure(), AuthSettings.of(config))

    def close(self) -> None:
        self.store.close()

    # --- authentication --------------------------------------------------------------------------------------------

    def identity_of(self, principal: Principal | None, limit: tuple[Grant, ...] | None = None) -> Identity:
        return Identity(principal, self.store.grants_for(principal), limit)

    def login(self, username: str, password: str, address: str, request_id: str = "") -> Identity:
        """Basic credentials: a user's password, a robot's secret, or a user's personal access token.

        A success is remembered briefly, so clients that send credentials on every request do not
        pay for argon2 each time; each reuse still checks in one indexed query that the password is
        unchanged or the credential unrevoked, so a revocation or a deletion counts at once.
        """
        key = hashlib.blake2b(f"{username}\0{password}".encode(), key=self._cache_key).digest()
        now = time.time()
        remembered = self._logins.get(key)
        if remembered is not None and remembered[2] > now and self.store.still_valid(remembered[1]):
            return remembered[0]
        limits = self._failure_keys(username, address)
        wait = max(self.store.retry_after(keys, limit, self.settings.failure_window) for keys, limit in limits)
        if wait > 0:
            raise RateLimited(wait)
        checked = self._check(username, password)
        if checked is None:
            for keys, _ in limits:
                self.store.note_failure(keys, self.settings.failure_window)
            ctx = Actor(username or "anonymous", address, request_id)
            self.audit(ctx, "auth.login", username, "denied", "bad credentials")
            raise AuthFailed("invalid username or password")
        if len(self._logins) > 10_000:
            self._logins.clear()
        self._logins[key] = (checked[0], checked[1], now + LOGIN_CACHE_SECONDS)
        return checked[0]

    def _failure_keys(self, username: str, address: str) -> list[tuple[list[str], int]]:
        # The pair is limited tightly; the name alone and the address alone more loosely, so a
        # spray over many names or from many addresses is caught without one address locking
        # a user out everywhere too soon.
        # Keys are digests: a name is whatever a client sent (NUL bytes included, which
        # PostgreSQL text refuses), and a digest keeps the pair unambiguous.
        tight = self.settings.max_failures
        pair, user = _key_digest(f"{username}\0{address}"), _key_digest(username)
        return [([f"pair:{pair}"], tight), ([f"user:{user}", f"addr:{_key_digest(address)}"], tight * 5)]

    def _check(self, username: str, password: str) -> tuple[Identity, Validity] | None:
        if cred.is_secret(password):
            found = self.store.find_credential(cred.secret_digest(password))
            if found is None or found[1].kind == "refresh" or not cred.same(found[0].name, username):
                return None
            principal, credential = found
            return self.identity_of(principal, credential.grants), ("credential", credential.id, "")
        stored = self.store.password_hash(username)
        if not cred.verify_password(stored[1] if stored else None, password) or stored is None:
            return None
        principal, password_hash = stored
        if principal.expired():
            return None
        return self.identity_of(principal), ("password", principal.id, password_hash)

    def refresh(self, refresh_token: str) -> Identity:
        found = self.store.find_credential(cred.secret_digest(refresh_token)) if cred.is_secret(refresh_token) else None
        if found is None or found[1].kind != "refresh":
            raise AuthFailed("the refresh token is unknown, expired or revoked")
        return self.identity_of(found[0])

    def identity_for_subject(self, subject: str | None) -> Identity | None:
        """The live identity behind a token's `sub` (None: anonymous), briefly cached; None when
        the principal is gone or expired."""
        now = time.time()
        key = subject or ""
        cached = self._subject_grants.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        if subject is None:
            identity: Identity | None = self.identity_of(None)
        else:
            principal = self.store.principal(subject)
            identity = None if principal is None or principal.expired(now) else self.identity_of(principal)
        if len(self._subject_grants) > 10_000:
            self._subject_grants.clear()
        self._subject_grants[key] = (identity, now + GRANT_CACHE_SECONDS)
        return identity

    # --- tokens ----------------------------------------------------------------------------------------------------

    def issue_token(self, identity: Identity, requested: list[Scope]) -> tuple[str, int, float, list[Scope]]:
        granted = identity.grant(requested)
        token, expires_in, issued_at = self.tokens.issue(identity.name, self.settings.service, granted)
        return token, expires_in, issued_at, granted

    def issue_refresh_token(self, identity: Identity, client_id: str) -> str:
        assert identity.principal is not None
        secret = cred.new_secret(cred.REFRESH_PREFIX)
        self.store.add_credential(
            identity.principal,
            "refresh",
            client_id[:64] or "login",
            cred.secret_digest(secret),
            expires=time.time() + self.settings.refresh_ttl,
        )
        return secret

    # --- management, every change audited --------------------------------------------------------------------------

    def audit(self, ctx: Actor, action: str, target: str, outcome: str = "ok", detail: str = "") -> None:
        self.store.record(ctx, action, target, outcome, detail)

    def add_user(
        self, ctx: Actor, name: str, password: str, *, admin: bool = False, groups: tuple[str, ...] = ()
    ) -> Principal:
        _check_password(password)
        password_hash = cred.hash_password(password)  # slow: before the write lock, not under it
        with self.store.change():
            principal = self.store.add_principal(name, "user", password_hash=password_hash, admin=admin, groups=groups)
            self.audit(ctx, "user.create", name, detail=("admin " if admin else "") + ",".join(groups))
        return principal

    def set_password(self, ctx: Actor, name: str, password: str) -> None:
        _check_password(password)
        password_hash = cred.hash_password(password)
        with self.store.change():
            self.store.set_password(name, password_hash)
            principal = self.store.principal(name, "user")
            assert principal is not None
            # A new password ends the sessions the old one started.
            self.store.revoke_credentials_of(principal, ("refresh",))
            self.audit(ctx, "user.password", name)
        self._logins.clear()

    def remove_principal(self, ctx: Actor, name: str, kind: str) -> None:
        with self.store.change():
            self.store.remove_principal(name, kind)
            self.audit(ctx, f"{kind}.delete", name)
        self._logins.clear()

    def create_robot(
        self, ctx: Actor, name: str, grants: tuple[Grant, ...], expires: float | None, description: str = ""
    ) -> tuple[Principal, str]:
        """A robot with its grants and its one secret, shown only now."""
        if not grants:
            raise AuthStoreError("a robot needs at least one --scope; it can do nothing otherwise")
        secret = cred.new_secret(cred.ROBOT_PREFIX)
        with self.store.change():  # a robot is whole (grants, secret, audit event) or not there
            principal = self.store.add_principal(name, "robot", expires=expires, description=description)
            for grant in grants:
                self.store.add_policy(principal.subject, grant)
            self.store.add_credential(principal, "robot", "secret", cred.secret_digest(secret), expires=expires)
            self.audit(ctx, "robot.create", name, detail=" ".join(str(g) for g in grants))
        return principal, secret

    def create_token(
        self, ctx: Actor, owner: str, name: str, expires: float | None, grants: tuple[Grant, ...] | None
    ) -> str:
        principal = self.store.principal(owner, "user")
        if principal is None:
            raise AuthStoreError(f"there is no user named {owner!r}")
        secret = cred.new_secret(cred.TOKEN_PREFIX)
        digest = cred.secret_digest(secret)
        with self.store.change():
            self.store.add_credential(principal, "token", name, digest, grants=grants, expires=expires)
            self.audit(ctx, "token.create", f"{owner}/{name}")
        return secret

    def revoke(self, ctx: Actor, credential_id: int, owner: str | None = None) -> None:
        with self.store.change():
            revoked = self.store.revoke_credential(credential_id, owner)
            self.audit(ctx, f"{revoked.kind}.revoke", f"{revoked.principal}/{revoked.name}")
        self._logins.clear()

    def add_policy(self, ctx: Actor, subject: str, grant: Grant) -> None:
        with self.store.change():
            self.store.add_policy(subject, grant)
            self.audit(ctx, "policy.set", subject, detail=str(grant))

    def remove_policy(self, ctx: Actor, policy_id: int) -> None:
        with self.store.change():
            self.store.remove_policy(policy_id)
            self.audit(ctx, "policy.delete", str(policy_id))

    def rotate_keys(self, ctx: Actor) -> str:
        kid = self.keys.rotate()
        self.audit(ctx, "key.rotate", kid)
        return kid

    def ensure_initial_admin(self, data: Path) -> Path | None:
        """On a registry with no principals, create `admin` with a random password kept in a 0600 file."""
        if self.store.count_principals():
            return None
        password = secrets.token_urlsafe(18)
        self.add_user(Actor("cargohold"), "admin", password, admin=True)
        path = data / "initial-admin-password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        return path


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise AuthStoreError("a password needs at least 8 characters")
    if cred.is_secret(password):
        raise AuthStoreError("a password may not start like a generated secret (chr_, chp_, chf_)")


def _key_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
