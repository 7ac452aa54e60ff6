"""Settings: defaults, then a YAML file, then CARGOHOLD_* environment variables, then flags."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .oci.rules import Quota, RetentionPolicy

ENV_PREFIX = "CARGOHOLD_"
LOG_LEVELS = ("debug", "info", "warning", "error")


_S3_LOCATION = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/([A-Za-z0-9._/-]*))?\Z")


class ConfigError(ValueError):
    """A setting that cannot be used, named so a person can fix it."""


@dataclass
class Config:
    listen: str = "127.0.0.1:5000"
    data: Path = field(default_factory=lambda: Path("./data"))
    # The metadata database: empty for <data>/metadata.sqlite3, or a postgresql://user@host:port/name
    # URL (shared by every replica).
    database: str = ""
    # The longest a request waits on the database (PostgreSQL: for a connection, to connect, for
    # one statement, the write lock included; SQLite: for the write lock) before it is answered
    # 503 with Retry-After, so an outage or a stuck lock costs clients seconds, not minutes.
    database_timeout: float = 10.0
    # Where blobs live: empty for the data directory, or s3://bucket[/prefix] on an S3-compatible
    # object store (AWS S3, MinIO, Ceph RGW), credentials from the usual AWS variables or files.
    blob_store: str = ""
    s3_endpoint: str = ""  # e.g. http://127.0.0.1:9000 for MinIO; empty for AWS
    s3_region: str = "us-east-1"
    # Answer blob GETs with a redirect to a presigned URL, so bytes flow from the store directly.
    s3_redirect: bool = False
    # The longest one call to the object store may go without an answer (it is tried twice).
    s3_timeout: float = 10.0
    # 32 random bytes (base64) that seal secrets kept in the database (token signing keys):
    # empty for <data>/secret.key, made on first start. Replicas sharing a database need the same file.
    secret_file: str = ""
    workers: int = 1
    log_level: str = "info"
    access_log: bool = True
    # fsync blobs before they become visible: survives power loss, costs some throughput.
    fsync: bool = True
    max_manifest_bytes: int = 4 * 1024 * 1024
    # A request body that sends nothing for this long is answered 408 and its connection closed,
    # so a stalled client cannot hold an upload session (or a worker's memory) forever.
    body_timeout: float = 60.0
    # Upload sessions with no new bytes for this long are removed, with their data.
    upload_max_age: float = 24 * 3600.0
    # How often a running server looks for such sessions.
    upload_sweep_interval: float = 3600.0
    # A blob nothing references is kept this long after its last use (upload, HEAD, mount,
    # manifest PUT), so a push in progress never loses a layer it already sent.
    gc_grace: float = 3600.0
    # How often a running server collects garbage; 0 turns it off.
    gc_interval: float = 3600.0
    # Untagged manifests (not an index's child, not a referrer of a kept one) older than this
    # are collected; 0 keeps them forever, as pushes by digest are a legitimate workflow.
    gc_untagged_age: float = 0.0
    # Tags that may be created but never moved or deleted, as REPOSITORY_GLOB:TAG_GLOB rules
    # (fnmatch; `*` also crosses `/`), e.g. ("*:v*", "prod/*:*").
    immutable_tags: tuple[str, ...] = ()
    # Tag retention, one policy per repository pattern (the first match applies); see README.
    retention: tuple[RetentionPolicy, ...] = ()
    # How often a running server applies the retention policies (when there are any).
    retention_interval: float = 3600.0
    # Byte limits on unique stored blobs, per repository pattern or per namespace; see README.
    quotas: tuple[Quota, ...] = ()
    # Access control. On by default: least privilege. Off means anyone who reaches the port may do anything.
    auth: bool = True
    # The `service` in challenges and the audience of tokens; the realm defaults to this server's /token.
    auth_service: str = "cargohold"
    auth_realm: str = ""
    token_ttl: float = 300.0
    refresh_token_ttl: float = 30 * 86400.0
    # Failed logins allowed per user and address within the window before 429 (5x that per user or address).
    auth_max_failures: int = 10
    auth_failure_window: float = 300.0
    # TLS: a certificate and key, or `tls_dev` for a local CA and certificate made under <data>/tls.
    # Addresses or networks of the balancers in front (comma-separated): their X-Forwarded-For
    # names the client. Empty: the header is ignored, the connection's peer is the client.
    trusted_proxies: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_dev: bool = False
    # Audit events are kept this long (pruned with the upload sweep); 0 keeps them forever.
    audit_retention: float = 365 * 86400.0
    # Images pushed to repositories matching these globs (fnmatch; `*` crosses `/`) are catalogued,
    # scanned and linted by a background worker; empty: no scan on push.
    scan_on_push: tuple[str, ...] = ()
    # How long a scan worker holds a job before another may take it (a worker that died).
    scan_lease: float = 600.0

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def database_path(self) -> Path:
        return self.data / "metadata.sqlite3"

    @property
    def secret_path(self) -> Path:
        return Path(self.secret_file) if self.secret_file else self.data / "secret.key"

    @property
    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """`trusted_proxies` as networks."""
        networks = []
        for entry in (part.strip() for part in self.trusted_proxies.split(",")):
            if entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"{entry[:60]!r} is not an IP address or network") from None
        return tuple(networks)

    @property
    def s3_location(self) -> tuple[str, str]:
        """(bucket, key prefix) of `blob_store`."""
        found = _S3_LOCATION.match(self.blob_store)
        if not found or ".." in (found[2] or ""):
            raise ConfigError(
                f"blob_store {self.blob_store[:100]!r} must be empty (the data directory) or s3://bucket[/prefix], "
                "with a bucket name of 3-63 lowercase letters, digits, dots and hyphens"
            )
        return found[1], found[2] or ""

    @property
    def database_target(self) -> Path | str:
        """What `storage.backends.open_database` opens: the SQLite file or the PostgreSQL URL."""
        return self.database if self.database.startswith("postgresql://") else self.database_path

    def to_env(self) -> dict[str, str]:
        """The environment that recreates this config in a worker process."""

        def text(name: str, value: Any) -> str:
            if name in ("retention", "quotas"):
                return json.dumps([dataclasses.asdict(item) for item in value])
            return ",".join(value) if isinstance(value, tuple) else str(value)

        return {ENV_PREFIX + f.name.upper(): text(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*\Z")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | float) -> float:
    """Seconds from `90`, `45s`, `30m`, `24h`, `90d` or `2w`."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    found = _DURATION.match(str(text))
    if not found:
        raise ValueError(f"{text!r} is not a duration such as 45s, 30m, 24h or 90d")
    return float(found[1]) * _UNIT_SECONDS[found[2]]


def expires_at(text: str | float | None) -> float | None:
    """The moment a lifetime such as `90d` from now ends; None for no expiry (None, "", "never")."""
    if text in (None, "", "never"):
        return None
    return time.time() + parse_duration(text)


def _coerce(name: str, raw: Any, default: Any) -> Any:
    try:
        if isinstance(default, float):
            return parse_duration(raw)
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, Path):
            return Path(str(raw))
        if isinstance(default, tuple):  # a YAML list, or a comma-separated string from the environment
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(item).strip() for item in items if str(item).strip())
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name!r} has an unusable value {raw!r}") from None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_SIZE_UNITS |= {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str | int) -> int:
    """Bytes from `1048576`, `500MB`, `10GiB`."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    found = _SIZE.match(str(text))
    if not found:
        raise ValueError(f"{text!r} is not a size such as 500MB or 10GiB")
    return int(float(found[1]) * _SIZE_UNITS[(found[2] or "").lower()])


def _mappings(name: str, raw: Any) -> list[dict[str, Any]]:
    """A YAML list of mappings, or its JSON text (the environment's form)."""
    try:
        items = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise ConfigError(f"{name} must be a list (JSON in {ENV_PREFIX}{name.upper()})") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ConfigError(f"{name} must be a list of mappings")
    return items


def _quotas(raw: Any) -> tuple[Quota, ...]:
    quotas = []
    for index, raw_item in enumerate(_mappings("quotas", raw)):
        where = f"quotas[{index}]"
        item = {key: value for key, value in raw_item.items() if value is not None}
        if set(item) - {"repositories", "namespace", "limit"} or "limit" not in item:
            raise ConfigError(f"{where} takes `limit` and one of `repositories` or `namespace`")
        if ("repositories" in item) == ("namespace" in item):
            raise ConfigError(f"{where} needs exactly one of `repositories` (a pattern) or `namespace`")
        try:
            limit = parse_size(item["limit"])
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
        quotas.append(Quota(limit, item.get("repositories"), item.get("namespace")))
    return tuple(quotas)


def _retention(raw: Any) -> tuple[RetentionPolicy, ...]:
    """Policies from a YAML list of mappings, or JSON text (the environment's form)."""
    policies = []
    for index, item in enumerate(_mappings("retention", raw)):
        where = f"retention[{index}]"
        if not isinstance(item.get("repositories"), str):
            raise ConfigError(f"{where} needs a 'repositories' pattern, e.g. 'team/*'")
        unknown = set(item) - {"repositories", "keep_last", "keep", "older_than"}
        if unknown:
            raise ConfigError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
        try:
            keep_last = item.get("keep_last")
            if keep_last is not None and (isinstance(keep_last, bool) or int(keep_last) < 0):
                raise ValueError(keep_last)
            older_than = item.get("older_than")
            policies.append(
                RetentionPolicy(
                    repositories=item["repositories"],
                    keep_last=None if keep_last is None else int(keep_last),
                    keep=tuple(str(pattern) for pattern in item.get("keep") or ()),
                    older_than=None if older_than is None else parse_duration(older_than),
                )
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: unusable value {err}") from None
    return tuple(policies)


def load_config(file: Path | None = None, environ: dict[str, str] | None = None, **overrides: Any) -> Config:
    environ = dict(os.environ if environ is None else environ)
    config = Config()
    known = {f.name: f for f in dataclasses.fields(config)}
    values: dict[str, Any] = {}
    if file is not None:
        try:
            document = yaml.safe_load(Path(file).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read config file {file}: {err}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"config file {file} must hold a mapping of settings")
        unknown = sorted(set(document) - set(known))
        if unknown:
            raise ConfigError(f"unknown settings in {file}: {', '.join(unknown)}; known: {', '.join(known)}")
        values.update(document)
    for name in known:
        if ENV_PREFIX + name.upper() in environ:
            values[name] = environ[ENV_PREFIX + name.upper()]
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name, raw in values.items():
        parse = {"retention": _retention, "quotas": _quotas}.get(name)
        setattr(config, name, parse(raw) if parse else _coerce(name, raw, getattr(config, name)))
    port = config.listen.rsplit(":", 1)[1] if ":" in config.listen else ""
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise ConfigError(f"listen address {config.listen!r} must be HOST:PORT, with a port from 0 to 65535")
    config.log_level = config.log_level.lower()
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level {config.log_level!r} must be one of {', '.join(LOG_LEVELS)}")
    if config.database and not config.database.startswith("postgresql://"):
        raise ConfigError("database must be empty (SQLite under the data directory) or a postgresql:// URL")
    if config.blob_store:
        _ = config.s3_location  # raises a ConfigError naming the problem
    if config.trusted_proxies:
        try:
            _ = config.proxy_networks
        except ValueError as err:
            raise ConfigError(f"trusted_proxies: {err}") from None
    if config.s3_timeout <= 0:
        raise ConfigError("s3_timeout must be more than 0 (a request would otherwise wait forever)")
    if config.database_timeout <= 0:
        raise ConfigError("database_timeout must be more than 0 (a request would otherwise wait forever)")
    if config.workers < 1:
        raise ConfigError("workers must be at least 1")
    if config.body_timeout <= 0:
        raise ConfigError("body_timeout must be more than 0 (a stalled body would otherwise never end)")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("tls_cert and tls_key go together: give both, or neither")
    if config.tls_dev and config.tls_cert:
        raise ConfigError("tls_dev makes its own certificate; do not give tls_cert/tls_key with it")
    for rule in config.immutable_tags:
        if ":" not in rule:
            raise ConfigError(f"immutable_tags rule {rule!r} must be REPOSITORY_GLOB:TAG_GLOB, e.g. '*:v*'")
    return config
