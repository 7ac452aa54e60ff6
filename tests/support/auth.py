"""A registry with auth and TLS on, and the CLI calls that set up its principals."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.servers import Cargohold

SERVICE = "cargohold"


class SecureRegistry:
    """Our registry serving HTTPS (development CA) with access control on.

    Every password and secret a test hands out is remembered in `secrets`, so a test can check
    that none of them ever reaches the server's log or its database in clear.
    """

    def __init__(self, server: Cargohold) -> None:
        self.server = server
        self.secrets: set[str] = set()
        self.admin_password = server.admin_password()
        self.secrets.add(self.admin_password)
        self.cert_dir = server.workdir / "certs"  # what skopeo/podman --cert-dir want: a dir with ca.crt
        self.cert_dir.mkdir(exist_ok=True)
        if server.ca.exists():  # a registry started with tls
            (self.cert_dir / "ca.crt").write_bytes(server.ca.read_bytes())

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ca(self) -> Path:
        return self.server.ca

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "cargohold", *args, "--data", str(self.server.data)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env=self.server.env(),
        )
        if check and result.returncode != 0:
            raise AssertionError(f"cargohold {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def add_user(
        self, name: str, password: str, *scopes: str, admin: bool = False, groups: tuple[str, ...] = ()
    ) -> str:
        self.secrets.add(password)
        flags = ["--admin"] if admin else []
        for group in groups:
            flags += ["--group", group]
        self.cli("user", "add", name, "--password-stdin", *flags, stdin=password + "\n")
        for scope in scopes:
            self.cli("policy", "add", f"user:{name}", scope)
        return password

    def create_robot(self, name: str, *scopes: str, expires: str = "90d") -> str:
        args = ["robot", "create", name, "--expires", expires]
        for scope in scopes:
            args += ["--scope", scope]
        secret = self.cli(*args).stdout.strip()
        self.secrets.add(secret)
        return secret

    def create_token(self, user: str, name: str, *scopes: str, expires: str = "30d") -> str:
        args = ["token", "create", user, name, "--expires", expires]
        for scope in scopes:
            args += ["--scope", scope]
        secret = self.cli(*args).stdout.strip()
        self.secrets.add(secret)
        return secret

    def client(self, **kwargs: object) -> httpx.Client:
        verify = ssl.create_default_context(cafile=str(self.ca)) if self.ca.exists() else True
        return httpx.Client(base_url=self.url, verify=verify, timeout=30, **kwargs)  # type: ignore[arg-type]

    def token(self, username: str | None, password: str | None, *scopes: str) -> str:
        """A bearer token from /token, as docker would get one."""
        auth = (username, password) if username is not None and password is not None else None
        with self.client() as client:
            response = client.get("/token", params={"service": SERVICE, "scope": list(scopes)}, auth=auth)
        assert response.status_code == 200, response.text
        token = response.json()["token"]
        self.secrets.add(token)
        return token

    def bearer(self, token: str) -> httpx.Client:
        return self.client(headers={"authorization": f"Bearer {token}"})
