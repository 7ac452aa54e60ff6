"""Registry credentials in docker's `config.json`, with docker's credential helpers.

Reads `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`): `auths[host].auth` (base64
`user:password`), `credHelpers[host]` and `credsStore`, which name a `docker-credential-<name>`
program spoken to with docker's protocol (`get`/`store`/`erase`, JSON on stdin/stdout).

    >>> store = CredentialStore()                       # doctest: +SKIP
    >>> store.get("127.0.0.1:5000")                     # doctest: +SKIP
    Credentials(username='ci', password='...')
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..oci.reference import DOCKER_HUB, DOCKER_HUB_AUTH_KEY, parse_registry
from .errors import ClientError


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)  # never printed, never logged
    # What `docker login` keeps instead of a password when the token server hands out refresh
    # tokens (cargohold's does): exchanged for access tokens with the OAuth2 refresh grant.
    identity_token: str = field(default="", repr=False)


def config_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def _auth_key(registry: str) -> str:
    return DOCKER_HUB_AUTH_KEY if registry == DOCKER_HUB else registry


class CredentialStore:
    """One config.json; `get` never raises for a host it has nothing for (anonymous access)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or config_dir()
        self.path = self.directory / "config.json"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise ClientError(f"cannot read {self.path}: {err}") from None
        if not isinstance(data, dict):
            raise ClientError(f"{self.path} is not a JSON object")
        return data

    def _save(self, data: dict[str, Any]) -> None:
        """Write atomically with mode 0600: the file holds secrets."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".config.json.")
        try:
            with os.fdopen(fd, "w") as out:
                os.fchmod(out.fileno(), 0o600)
                json.dump(data, out, indent="\t")
                out.write("\n")
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def _helper(self, data: dict[str, Any], registry: str) -> str | None:
        helpers = data.get("credHelpers") or {}
        return helpers.get(_auth_key(registry)) or helpers.get(registry) or data.get("credsStore") or None

    def get(self, registry: str) -> Credentials | None:
        registry = parse_registry(registry)
        data = self._load()
        helper = self._helper(data, registry)
        if helper:
            found = _run_helper(helper, "get", _auth_key(registry))
            if found is not None:
                reply = _parse_helper_json(helper, found)
                if reply.get("Username") == "<token>":  # the helper protocol's mark of an identity token
                    return Credentials("", "", identity_token=str(reply.get("Secret", "")))
                if reply.get("Username") or reply.get("Secret"):
                    return Credentials(str(reply.get("Username", "")), str(reply.get("Secret", "")))
        for key, entry in (data.get("auths") or {}).items():
            if parse_registry(key) == registry and isinstance(entry, dict):
                if entry.get("identitytoken"):
                    user = base64.b64decode(entry.get("auth") or "").decode(errors="replace").partition(":")[0]
                    return Credentials(user, "", identity_token=str(entry["identitytoken"]))
                if entry.get("auth"):
                    try:
                        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                    except (ValueError, UnicodeDecodeError):
                        raise ClientError(
                            f"{self.path}: the auth entry for {key} is not base64 user:password"
                        ) from None
                    return Credentials(user, password)
                if entry.get("username"):
                    return Credentials(entry["username"], entry.get("password", ""))
        return None

    def store(self, registry: str, credentials: Credentials) -> str:
        """Save credentials; returns where they went (the helper's name or the file)."""
        registry = parse_registry(registry)
        data = self._load()
        helper = self._helper(data, registry)
        if helper:
            payload = {"ServerURL": _auth_key(registry), "Username": credentials.username}
            payload["Secret"] = credentials.password
            _run_helper(helper, "store", json.dumps(payload))
            return f"docker-credential-{helper}"
        auths = data.setdefault("auths", {})
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        auths[_auth_key(registry)] = {"auth": token}
        self._save(data)
        return str(self.path)

    def erase(self, registry: str) -> bool:
        """Forget a registry's credentials; False when there were none."""
        registry = parse_registry(registry)
        data = self._load()
        helper = self._helper(data, registry)
        erased = False
        if helper:
            erased = _run_helper(helper, "erase", _auth_key(registry)) is not None
        auths = data.get("auths") or {}
        keys = [key for key in auths if parse_registry(key) == registry]
        for key in keys:
            del auths[key]
        if keys:
            self._save(data)
        return erased or bool(keys)


def _run_helper(name: str, action: str, stdin: str) -> str | None:
    """Run `docker-credential-<name> <action>`; None when it has no credentials for the server."""
    program = f"docker-credential-{name}"
    try:
        done = subprocess.run([program, action], input=stdin, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise ClientError(f"credential helper {program} named in config.json is not installed") from None
    except subprocess.TimeoutExpired:
        raise ClientError(f"credential helper {program} {action} did not answer within 60 s") from None
    if done.returncode != 0:
        message = (done.stdout + done.stderr).strip()
        if "credentials not found" in message.lower():
            return None
        raise ClientError(f"credential helper {program} {action} failed: {message.splitlines()[0] if message else ''}")
    return done.stdout


def _parse_helper_json(name: str, text: str) -> dict[str, Any]:
    try:
        reply = json.loads(text)
    except ValueError:
        raise ClientError(f"credential helper docker-credential-{name} printed something that is not JSON") from None
    if not isinstance(reply, dict):
        raise ClientError(f"credential helper docker-credential-{name} printed something that is not an object")
    return reply
