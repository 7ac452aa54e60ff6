"""Registries that want credentials: Debian's docker-registry with htpasswd (basic) or with docker's
token auth over TLS, and the small token server the latter needs (PyJWT RS256, x5c header)."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import subprocess
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import bcrypt
import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.servers import Distribution, free_port, serve_in_background, shut_down


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A key and a self-signed certificate for 127.0.0.1 (it is its own CA); returns (cert, key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class TokenServer:
    """Docker's token protocol over HTTPS: GET /token?service=&scope=... with basic auth (or none).

    Valid users get every scope they ask for; anonymous callers get pull only; a wrong password gets
    401. Every request's scopes are recorded in `requests` as (user, [scopes]).
    """

    def __init__(self, workdir: Path, users: dict[str, str], service: str = "test-registry") -> None:
        self.users = users
        self.service = service
        self.issuer = "test-issuer"
        self.cert, self.key = self_signed(workdir, "token")  # signs tokens; the registry trusts it
        self.tls_cert, self.tls_key = self_signed(workdir, "tls")  # serves HTTPS (registry and token server)
        self.signing_key = serialization.load_pem_private_key(self.key.read_bytes(), None)
        der = x509.load_pem_x509_certificate(self.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
        self.x5c = [base64.b64encode(der).decode()]
        self.requests: list[tuple[str | None, list[str]]] = []
        self.port = free_port()
        self.realm = f"https://127.0.0.1:{self.port}/token"
        self.server: ThreadingHTTPServer | None = None

    def _issue(self, user: str | None, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            allowed = [a for a in actions.split(",") if user is not None or a == "pull"]
            access.append({"type": kind, "name": name, "actions": allowed})
        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + 300, "nbf": now - 10,
            "iat": now, "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        return jwt.encode(claims, self.signing_key, algorithm="RS256", headers={"x5c": self.x5c})  # type: ignore[arg-type]

    def start(self) -> TokenServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                user = None
                header = self.headers.get("authorization", "")
                if header.lower().startswith("basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if outer.users.get(name) != password:
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = name
                scopes = query.get("scope", [])
                outer.requests.append((user, scopes))
                body = json.dumps({"token": outer._issue(user, scopes), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        serve_in_background(self.server)
        return self

    def stop(self) -> None:
        shut_down(self.server)


class AuthDistribution(Distribution):
    """docker-registry with `auth.htpasswd` (plain HTTP) or `auth.token` behind TLS."""

    kind = "distribution-auth"

    def __init__(
        self, workdir: Path, *, htpasswd: dict[str, str] | None = None, token: TokenServer | None = None
    ) -> None:
        super().__init__(workdir)
        self.htpasswd, self.token = htpasswd, token
        if token is not None:
            self.url = f"https://{self.host}"

    def command(self) -> list[str]:
        argv = super().command()
        config = self.workdir / "config.yml"
        extra = ""
        if self.htpasswd is not None:
            lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(5)).decode()}" for u, p in self.htpasswd.items()]
            (self.workdir / "htpasswd").write_text("\n".join(lines) + "\n")
            extra = f"auth:\n  htpasswd: {{realm: basic-realm, path: '{self.workdir / 'htpasswd'}'}}\n"
        if self.token is not None:
            t = self.token
            extra = (
                "auth:\n  token:\n"
                f"    realm: {t.realm}\n    service: {t.service}\n    issuer: {t.issuer}\n"
                f"    rootcertbundle: '{t.cert}'\n"
            )
            text = config.read_text().replace(
                f"http: {{addr: '{self.host}'}}",
                f"http: {{addr: '{self.host}', tls: {{certificate: '{t.tls_cert}', key: '{t.tls_key}'}}}}",
            )
            config.write_text(text)
        config.write_text(config.read_text() + extra)
        return argv

    def start(self) -> AuthDistribution:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        verify: ssl.SSLContext | bool = True
        if self.token is not None:
            verify = ssl.create_default_context(cafile=str(self.token.tls_cert))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_text()[-2000:]}")
            try:
                httpx.get(self.url + "/v2/", verify=verify, timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.url} did not answer: {self.log_text()[-2000:]}")
