"""Which scheme and which certificates to use for a registry host.

Plain HTTP for `--insecure` and, as docker does by default, for loopback hosts (localhost,
127.0.0.0/8, ::1) that have no CA configured. Every other host gets HTTPS verified against the
system's CAs plus `--ca-cert`, plus the docker `certs.d` convention: `*.crt` files (extra CAs) and
`client.cert`/`client.key` (a client certificate) in `<certs.d>/<host:port>/`, looked for in
`--cert-dir` itself, `$DOCKER_CONFIG/certs.d`, `/etc/docker/certs.d` and `/etc/containers/certs.d`.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from ..oci.reference import is_loopback
from .credentials import config_dir
from .errors import ClientError

SYSTEM_CERTS_D = (Path("/etc/docker/certs.d"), Path("/etc/containers/certs.d"))


@dataclass(frozen=True)
class TLSOptions:
    insecure: bool = False  # plain HTTP for every host
    ca_cert: Path | None = None
    cert_dir: Path | None = None  # a directory of *.crt (+ client.cert/client.key), used for every host


def _host_dirs(host: str, options: TLSOptions) -> list[Path]:
    dirs: list[Path] = []
    if options.cert_dir is not None:
        dirs.append(options.cert_dir)
    for root in (config_dir() / "certs.d", *SYSTEM_CERTS_D):
        candidate = root / host
        if candidate.is_dir():
            dirs.append(candidate)
    return dirs


def scheme_and_context(host: str, options: TLSOptions) -> tuple[str, ssl.SSLContext | None]:
    """("http", None) or ("https", a verifying context with the extra CAs and client cert)."""
    dirs = _host_dirs(host, options)
    cas = [options.ca_cert] if options.ca_cert else []
    client_pair: tuple[Path, Path] | None = None
    for directory in dirs:
        cas.extend(sorted(directory.glob("*.crt")))
        if (directory / "client.cert").exists() and (directory / "client.key").exists():
            client_pair = (directory / "client.cert", directory / "client.key")
    if options.insecure or (is_loopback(host) and not cas and client_pair is None):
        return "http", None
    context = ssl.create_default_context()
    bundle = os.environ.get("SSL_CERT_FILE")
    try:
        if bundle and Path(bundle).exists():
            context.load_verify_locations(cafile=bundle)
        for ca in cas:
            context.load_verify_locations(cafile=str(ca))
        if client_pair:
            context.load_cert_chain(str(client_pair[0]), str(client_pair[1]))
    except (OSError, ssl.SSLError) as err:
        raise ClientError(f"cannot load TLS certificates for {host}: {err}") from None
    return "https", context
