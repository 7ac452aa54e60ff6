"""A development TLS setup: a local CA and a server certificate signed by it, under <data>/tls.

Real clients (docker, skopeo, python-dxf) insist on TLS before they send credentials, and a
self-signed leaf certificate cannot be trusted the way docker's certs.d expects; a CA can.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class DevCertificates:
    ca: Path
    cert: Path
    key: Path


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(path.with_suffix(".tmp"), path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def default_hosts(listen_host: str) -> list[str]:
    hosts = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    if listen_host not in ("", "0.0.0.0", "::"):
        hosts.insert(0, listen_host)
    return hosts


def ensure_dev_certificates(directory: Path, hosts: list[str]) -> DevCertificates:
    """Create the CA once and a server certificate for `hosts`; reuse both while they cover them."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = DevCertificates(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    now = datetime.datetime.now(datetime.UTC)
    if (directory / "ca.key").exists() and paths.ca.exists():
        ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, f"cargohold development CA ({socket.gethostname()})")]
        )
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write(directory / "ca.key", _key_pem(ca_key), 0o600)
        _write(paths.ca, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    wanted = _names(hosts)
    if paths.cert.exists() and paths.key.exists():
        current = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        covered = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if all(name in covered for name in wanted) and current.not_valid_after_utc > now + datetime.timedelta(days=7):
            return paths
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=397))
        .add_extension(x509.SubjectAlternativeName(wanted), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(paths.key, _key_pem(key), 0o600)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def trust_instructions(ca: Path, listen: str) -> str:
    return (
        f"TLS with the development CA {ca}. To trust it:\n"
        f"  docker:  sudo mkdir -p /etc/docker/certs.d/{listen} && sudo cp {ca} /etc/docker/certs.d/{listen}/ca.crt\n"
        f"  podman/skopeo/buildah:  --cert-dir DIR (a directory holding ca.crt), or copy it to"
        f" /etc/containers/certs.d/{listen}/ca.crt\n"
        f"  curl:  curl --cacert {ca} https://{listen}/v2/"
    )
