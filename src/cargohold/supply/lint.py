"""`cargohold lint`: the production checks an image can answer by itself, from its config, its
manifest, the reference it was asked for by, and its layers' files.

The checks and their ids (stable: a policy or an ignore list names them):

======  ======================  ========  ==============================================================
id      name                    severity  fires when
======  ======================  ========  ==============================================================
CH001   runs-as-root            HIGH      `config.User` is empty, `root` or `0` (any group), or names an
                                          account whose uid is 0 in the image's `etc/passwd`
CH002   no-healthcheck          LOW       `config.Healthcheck` is missing, empty or `["NONE"]`
CH003   secret-in-env           by rule   an ENV value matches a token format (`secrets.CONTENT_RULES`),
                                          or its name says secret (`*PASSWORD*`, `*TOKEN*`...: HIGH)
                                          with a real value (not a path, `*_FILE`, `$VAR`, placeholder)
CH004   secret-in-history       by rule   a history `created_by` line holds one: `--build-arg`s leak
                                          there (`|2 TOKEN=abc ...`), as do `ENV` lines a later ENV
                                          overwrote and `RUN` commands with inline tokens
CH005   secret-in-file          by rule   a layer holds a file with a key or token (`secrets.py`), even
                                          if a later layer deletes or replaces it: layers are pulled whole;
                                          LOW in a library tree (`secrets.in_library`)
CH006   latest-tag              MEDIUM    the image was named by the tag `latest` or by no tag (and no
                                          digest)
CH007   latest-base             MEDIUM    the base image (`org.opencontainers.image.base.name`, annotation
                                          or label) is `latest` or untagged; LOW when `...base.digest`
                                          records which one was used
CH008   world-writable          MEDIUM    a file or directory of the final filesystem is writable by all
                                          and is not a sticky directory
CH009   setuid-setgid           LOW/MED   setuid/setgid files: one LOW finding for the usual distribution
                                          ones (`usr/bin/su`, `passwd`, `mount`...), MEDIUM for each other
CH010   image-size              LOW/MED   the layers' compressed sizes sum over `size_limit` (LOW) or over
                                          twice it (MEDIUM)
CH011   secret-in-label         by rule   a label value holds a token, or its name says secret
CH012   ssh-port                MEDIUM    port 22 is exposed: a container is entered with `exec`
CH013   empty-password          HIGH      an account in `etc/shadow` (or `etc/passwd`) has an empty
                                          password field: it logs in without one
CH014   extra-root-account      MEDIUM    an account other than `root` has uid 0 in `etc/passwd`
CH015   package-cache           LOW       the package manager's download cache or index is left in the
                                          final filesystem (`var/lib/apt/lists/`, `var/cache/apk/`...)
======  ======================  ========  ==============================================================

Not here, because the image cannot answer them: whether it runs with a user namespace, read-only
root, dropped capabilities or signatures (the runtime's and the registry's business).

Everything is pure: `lint_image` takes bytes and dicts and the facts `LintInterest` gathered during
the layer walk (`FileFacts`), so the CLI and the registry's worker get the same findings for the
same image. Findings never hold a secret whole (`secrets.redact`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ..oci.reference import ReferenceError, parse_reference
from . import secrets
from .secrets import SecretMatch


@dataclass(frozen=True)
class Check:
    id: str
    name: str
    severity: str  # the usual one; CH003-5/CH011 take their rule's, CH009/CH010 vary (see the table)
    title: str


CHECKS: tuple[Check, ...] = (
    Check("CH001", "runs-as-root", "HIGH", "the container runs as root"),
    Check("CH002", "no-healthcheck", "LOW", "no HEALTHCHECK"),
    Check("CH003", "secret-in-env", "HIGH", "a secret in an ENV value"),
    Check("CH004", "secret-in-history", "HIGH", "a secret in the build history"),
    Check("CH005", "secret-in-file", "HIGH", "a secret in a layer's file"),
    Check("CH006", "latest-tag", "MEDIUM", "the image is named by the latest tag"),
    Check("CH007", "latest-base", "MEDIUM", "the base image is named by the latest tag"),
    Check("CH008", "world-writable", "MEDIUM", "a world-writable path"),
    Check("CH009", "setuid-setgid", "LOW", "setuid/setgid files"),
    Check("CH010", "image-size", "LOW", "a large image"),
    Check("CH011", "secret-in-label", "HIGH", "a secret in a label"),
    Check("CH012", "ssh-port", "MEDIUM", "SSH port exposed"),
    Check("CH013", "empty-password", "HIGH", "an account without a password"),
    Check("CH014", "extra-root-account", "MEDIUM", "a second account with uid 0"),
    Check("CH015", "package-cache", "LOW", "package manager cache left in the image"),
)
CHECKS_BY_ID: dict[str, Check] = {check.id: check for check in CHECKS}

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO")
_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}

DEFAULT_SIZE_LIMIT = 1 << 30  # 1 GiB of compressed layers
BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
# Individual findings per check for paths (world-writable, setuid); past this, one finding counts the rest.
PATH_FINDINGS_LIMIT = 25


class LintInputError(ValueError):
    """A config or manifest the lint cannot read; the message names the field."""


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    title: str
    detail: str
    location: str  # "config.User", "history[3]", "layer sha256:...:etc/ssl/private/key.pem"
    layer: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in _SEVERITY_RANK:
            raise ValueError(f"finding {self.id}: unknown severity {self.severity!r}")

    @property
    def name(self) -> str:
        return CHECKS_BY_ID[self.id].name


def _finding(
    check_id: str, detail: str, location: str, *, severity: str | None = None, layer: str | None = None
) -> Finding:
    check = CHECKS_BY_ID[check_id]
    return Finding(check_id, severity or check.severity, check.title, detail, location, layer)


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (_SEVERITY_RANK[f.severity], f.id, f.location, f.detail))


# --- reading the config ----------------------------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config (OCI image-spec config.md) the checks read, type-checked."""

    user: str
    healthcheck: tuple[str, ...] | None  # None: no Healthcheck at all
    env: tuple[tuple[str, str], ...]
    labels: Mapping[str, str]
    exposed_ports: tuple[str, ...]
    history: tuple[str, ...]  # created_by of each entry ("" where absent)


def _typed(value: object, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        raise LintInputError(f"image config: {where} is {type(value).__name__}, expected {kind.__name__}")
    return value


def _field(document: Mapping[str, object], key: str, kind: type, where: str) -> Any:
    """`document[key]` of type `kind`; absent or null is the type's empty value."""
    value = document.get(key)
    return kind() if value is None else _typed(value, kind, where)


def parse_config(raw: bytes | Mapping[str, object]) -> ImageConfig:
    """The checks' view of an image config; LintInputError naming the field if it is malformed."""
    if isinstance(raw, bytes | bytearray):
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise LintInputError(f"image config: not JSON ({error})") from None
    else:
        document = raw
    document = _typed(document, dict, "the document")
    container = _field(document, "config", dict, "config")
    user = _field(container, "User", str, "config.User")
    healthcheck: tuple[str, ...] | None = None
    if (check := container.get("Healthcheck")) is not None:
        test = _field(_typed(check, dict, "config.Healthcheck"), "Test", list, "config.Healthcheck.Test")
        healthcheck = tuple(_typed(part, str, "config.Healthcheck.Test[]") for part in test)
    env = []
    for number, item in enumerate(_field(container, "Env", list, "config.Env")):
        name, _, value = _typed(item, str, f"config.Env[{number}]").partition("=")
        env.append((name, value))
    labels = _field(container, "Labels", dict, "config.Labels")
    for key, value in labels.items():
        _typed(value, str, f"config.Labels[{key!r}]")
    ports = tuple(_field(container, "ExposedPorts", dict, "config.ExposedPorts"))
    history = []
    for number, item in enumerate(_field(document, "history", list, "history")):
        entry = _typed(item, dict, f"history[{number}]")
        history.append(_field(entry, "created_by", str, f"history[{number}].created_by"))
    return ImageConfig(user, healthcheck, tuple(env), dict(labels), ports, tuple(history))


# --- secrets in names and values -------------------------------------------------------------

# A name that says its value is a secret; the suffixes after it that say the value only points to one.
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL|AUTH_?KEY")
_POINTER_SUFFIXES = (
    "_FILE",
    "_PATH",
    "_DIR",
    "_URL",
    "_URI",
    "_ENDPOINT",
    "_HOST",
    "_PORT",
    "_NAME",
    "_USER",
    "_USERNAME",
    "_ID",
    "_LENGTH",
    "_TTL",
    "_TIMEOUT",
    "_EXPIRY",
    "_TYPE",
)


def is_secret_name(name: str) -> bool:
    upper = re.sub(r"[^A-Z0-9]", "_", name.upper())
    return bool(_SECRET_NAME.search(upper)) and not upper.endswith(_POINTER_SUFFIXES)


def is_secret_value(value: str) -> bool:
    """A value a secret-named variable really holds: not empty, a path, a reference or a placeholder."""
    value = value.strip().strip("\"'")
    if not value or value.startswith(("/", "./", "$", "<", "%")):
        return False
    return not secrets.is_placeholder(value)


def _text_secrets(text: str) -> list[SecretMatch]:
    return secrets.scan_bytes(text.encode("utf-8", "surrogateescape"))


def _pair_findings(check_id: str, what: str, name: str, value: str, location: str) -> list[Finding]:
    """Findings for one NAME=value: token formats in the value, else the name saying secret."""
    found = [
        _finding(check_id, f"{what} {name}: {match.title} {match.redacted}", location, severity=match.severity)
        for match in _text_secrets(value)
    ]
    if not found and is_secret_name(name) and is_secret_value(value):
        found.append(_finding(check_id, f"{what} {name} holds a value {secrets.redact(value)}", location))
    return found


def check_env(config: ImageConfig) -> list[Finding]:
    findings: list[Finding] = []
    for number, (name, value) in enumerate(config.env):
        findings += _pair_findings("CH003", "ENV", name, value, f"config.Env[{number}]")
    return findings


def check_labels(config: ImageConfig) -> list[Finding]:
    findings: list[Finding] = []
    for key in sorted(config.labels):
        findings += _pair_findings("CH011", "label", key, config.labels[key], f"config.Labels[{key!r}]")
    return findings


# `NAME=value` in a history line: build arguments (`|2 A=b C=d /bin/sh -c ...`), ENV, `export`.
_ASSIGNMENT = re.compile(r"(?<![\w$.\-/])([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|'[^']*'|[^\s;&|]*)")


def check_history(config: ImageConfig) -> list[Finding]:
    """Secrets in `created_by`: token formats anywhere in the line, secret-named assignments.

    An ENV assignment still in the config with the same value is CH003's, not repeated here.
    """
    current = set(config.env)
    findings: list[Finding] = []
    for number, line in enumerate(config.history):
        location = f"history[{number}]"
        tokens = _text_secrets(line)
        findings += [
            _finding("CH004", f"{match.title} {match.redacted} in the build command", location, severity=match.severity)
            for match in tokens
        ]
        for match in _ASSIGNMENT.finditer(line):
            name, value = match.group(1), match.group(2).strip("\"'")
            if (name, value) in current or not (is_secret_name(name) and is_secret_value(value)):
                continue
            if any(secrets.redact(value) == token.redacted for token in tokens):
                continue  # already reported by its token format
            findings.append(_finding("CH004", f"{name}={secrets.redact(value)} (a build argument or ENV)", location))
    return findings


# --- config, reference and manifest ----------------------------------------------------------


def check_user(config: ImageConfig, passwd: bytes | None) -> list[Finding]:
    user = config.user.split(":", 1)[0].strip()
    if user in ("", "root", "0"):
        shown = f"USER is {config.user!r}" if config.user else "no USER is set"
        return [_finding("CH001", f"{shown}: processes run as uid 0", "config.User")]
    if passwd is not None and not user.isdigit():
        for account in _accounts(passwd):
            if account.name == user and account.uid == "0":
                return [_finding("CH001", f"USER {user!r} has uid 0 in etc/passwd", "config.User")]
    return []


def check_healthcheck(config: ImageConfig) -> list[Finding]:
    if config.healthcheck is None:
        return [_finding("CH002", "none is set: the runtime cannot tell a hung container", "config.Healthcheck")]
    if not config.healthcheck or config.healthcheck[0] == "NONE":
        return [_finding("CH002", "HEALTHCHECK NONE disables the check", "config.Healthcheck")]
    return []


def _unpinned(text: str) -> str | None:
    """Why a reference floats (`latest` tag or none, no digest), or None if it is pinned or unreadable."""
    try:
        ref = parse_reference(text)
    except ReferenceError:
        return None
    if ref.digest:
        return None
    if ref.tag is None:
        return "has no tag, which means latest"
    return "is tagged latest" if ref.tag == "latest" else None


def check_tag(reference: str) -> list[Finding]:
    why = _unpinned(reference)
    if why is None:
        return []
    return [_finding("CH006", f"{reference!r} {why}: what it names changes under its users", "reference")]


def check_base(config: ImageConfig, annotations: Mapping[str, str]) -> list[Finding]:
    for where, source in (("annotation", annotations), ("label", config.labels)):
        base = source.get(BASE_NAME)
        if not base or (why := _unpinned(base)) is None:
            continue
        pinned = bool(annotations.get(BASE_DIGEST) or config.labels.get(BASE_DIGEST))
        detail = f"base image {base!r} {why}: a rebuild takes whatever it is then"
        if pinned:
            detail += " (this build's base digest is recorded)"
        location = f"manifest.annotations[{BASE_NAME!r}]" if where == "annotation" else f"config.Labels[{BASE_NAME!r}]"
        return [_finding("CH007", detail, location, severity="LOW" if pinned else None)]
    return []


def check_ports(config: ImageConfig) -> list[Finding]:
    return [
        _finding("CH012", f"EXPOSE {port}: an SSH daemon in a container", "config.ExposedPorts")
        for port in config.exposed_ports
        if port.split("/", 1)[0] == "22"
    ]


def layer_sizes(manifest: Mapping[str, object]) -> list[int]:
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise LintInputError("manifest: layers is missing or not a list (an image index has no layers)")
    sizes = []
    for number, layer in enumerate(layers):
        size = layer.get("size") if isinstance(layer, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise LintInputError(f"manifest: layers[{number}].size is missing or not a size")
        sizes.append(size)
    return sizes


def check_size(manifest: Mapping[str, object], limit: int) -> list[Finding]:
    total = sum(layer_sizes(manifest))
    if total <= limit:
        return []
    severity = "MEDIUM" if total > 2 * limit else "LOW"
    detail = f"layers sum to {_mib(total)} compressed, over the limit of {_mib(limit)}"
    return [_finding("CH010", detail, "manifest.layers", severity=severity)]


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _annotations(manifest: Mapping[str, object]) -> dict[str, str]:
    annotations = manifest.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise LintInputError("manifest: annotations is not a map of strings")
    return annotations


# --- accounts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Account:
    name: str
    password: str
    uid: str


def _accounts(data: bytes) -> list[_Account]:
    """Lines of etc/passwd or etc/shadow: name, password field, and (passwd only) uid."""
    accounts = []
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) < 2 or not fields[0] or line.startswith(("#", "+", "-")):
            continue
        accounts.append(_Account(fields[0], fields[1], fields[2] if len(fields) > 2 else ""))
    return accounts


def check_accounts(passwd: bytes | None, shadow: bytes | None) -> list[Finding]:
    findings = []
    if shadow is not None:
        for account in _accounts(shadow):
            if account.password == "":
                findings.append(_finding("CH013", f"{account.name!r} has an empty password", "etc/shadow"))
    if passwd is not None:
        for account in _accounts(passwd):
            if account.password == "":
                findings.append(_finding("CH013", f"{account.name!r} has an empty password", "etc/passwd"))
            if account.uid == "0" and account.name != "root":
                findings.append(_finding("CH014", f"{account.name!r} has uid 0", "etc/passwd"))
    return findings


# --- the files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathFact:
    """A path of the final filesystem a file check reads: its kind, mode and the layer that wrote it."""

    path: str
    kind: str  # "file", "dir", "symlink", "hardlink", "other" (layers.Entry's)
    mode: int
    layer: str
    size: int = 0


@dataclass(frozen=True)
class FileSecret:
    """Secrets in one file of one layer. `present`: the final filesystem still has this layer's file."""

    path: str
    layer: str
    index: int
    present: bool
    matches: tuple[SecretMatch, ...]


@dataclass(frozen=True)
class FileFacts:
    """What the file checks read, gathered by `LintInterest` during the layer walk (or built by hand)."""

    special: tuple[PathFact, ...] = ()  # setuid or setgid files
    world_writable: tuple[PathFact, ...] = ()
    secrets: tuple[FileSecret, ...] = ()
    passwd: bytes | None = None
    shadow: bytes | None = None
    caches: tuple[PathFact, ...] = ()  # files in package manager caches


# The setuid/setgid programs distributions install (paths after `bin/` -> `usr/bin/` merging).
USUAL_SETUID = frozenset(
    {
        "usr/bin/su",
        "usr/bin/passwd",
        "usr/bin/chsh",
        "usr/bin/chfn",
        "usr/bin/gpasswd",
        "usr/bin/newgrp",
        "usr/bin/mount",
        "usr/bin/umount",
        "usr/bin/chage",
        "usr/bin/expiry",
        "usr/bin/wall",
        "usr/bin/write",
        "usr/bin/write.ul",
        "usr/bin/crontab",
        "usr/bin/ssh-agent",
        "usr/bin/newuidmap",
        "usr/bin/newgidmap",
        "usr/bin/fusermount",
        "usr/bin/fusermount3",
        "usr/bin/ping",
        "usr/bin/bbsuid",
        "usr/sbin/unix_chkpwd",
        "usr/sbin/pam_extrausers_chkpwd",
        "usr/lib/openssh/ssh-keysign",
        "usr/libexec/openssh/ssh-keysign",
        "usr/lib/dbus-1.0/dbus-daemon-launch-helper",
        "usr/lib/polkit-1/polkit-agent-helper-1",
        "usr/lib/x86_64-linux-gnu/utempter/utempter",
        "usr/lib/aarch64-linux-gnu/utempter/utempter",
        "usr/lib/eject/dmcrypt-get-device",
        "usr/bin/dotlockfile",
        "usr/bin/bsd-write",
        "usr/bin/at",
        "usr/sbin/exim4",
    }
)


def _merged_usr(path: str) -> str:
    for short in ("bin/", "sbin/", "lib/"):
        if path.startswith(short):
            return "usr/" + path
    return path


def check_special(facts: FileFacts) -> list[Finding]:
    usual = sorted(f.path for f in facts.special if _merged_usr(f.path) in USUAL_SETUID)
    other = sorted((f for f in facts.special if _merged_usr(f.path) not in USUAL_SETUID), key=lambda f: f.path)
    findings = []
    if usual:
        detail = f"{len(usual)} setuid/setgid file(s) of the usual distribution set: {', '.join(usual)}"
        findings.append(_finding("CH009", detail, "filesystem"))
    for fact in other[:PATH_FINDINGS_LIMIT]:
        bits = " and ".join(name for bit, name in ((0o4000, "setuid"), (0o2000, "setgid")) if fact.mode & bit)
        detail = f"{bits} (mode {fact.mode:04o}), not one of the usual distribution programs"
        findings.append(
            _finding("CH009", detail, f"layer {fact.layer}:{fact.path}", severity="MEDIUM", layer=fact.layer)
        )
    if len(other) > PATH_FINDINGS_LIMIT:
        detail = f"{len(other) - PATH_FINDINGS_LIMIT} more setuid/setgid files not listed"
        findings.append(_finding("CH009", detail, "filesystem", severity="MEDIUM"))
    return findings


def check_world_writable(facts: FileFacts) -> list[Finding]:
    paths = sorted(facts.world_writable, key=lambda f: f.path)
    findings = [
        _finding("CH008", f"{fact.kind} with mode {fact.mode:04o}", f"layer {fact.layer}:{fact.path}", layer=fact.layer)
        for fact in paths[:PATH_FINDINGS_LIMIT]
    ]
    if len(paths) > PATH_FINDINGS_LIMIT:
        findings.append(_finding("CH008", f"{len(paths) - PATH_FINDINGS_LIMIT} more not listed", "filesystem"))
    return findings


def check_file_secrets(facts: FileFacts) -> list[Finding]:
    findings = []
    for found in facts.secrets:
        where = "" if found.present else " (deleted or replaced by a later layer, still pullable in this one)"
        library = secrets.in_library(found.path)
        if library:
            where += " (in a library's files: likely its vendor's, reported LOW)"
        for match in found.matches:
            detail = f"{match.title} {match.redacted} at byte {match.offset}{where}"
            location = f"layer {found.layer}:{found.path}"
            severity = "LOW" if library else match.severity
            findings.append(_finding("CH005", detail, location, severity=severity, layer=found.layer))
    return findings


# Package manager caches and indexes that a `RUN` which installs should have removed.
CACHE_DIRS = ("var/lib/apt/lists/", "var/cache/apt/archives/", "var/cache/apk/", "var/cache/yum/", "var/cache/dnf/")


def is_cache_file(path: str) -> bool:
    name = PurePosixPath(path).name
    return path.startswith(CACHE_DIRS) and name not in ("lock", "auxfiles") and "/partial/" not in path


def check_caches(facts: FileFacts) -> list[Finding]:
    by_dir: dict[str, list[PathFact]] = {}
    for fact in facts.caches:
        directory = next(d for d in CACHE_DIRS if fact.path.startswith(d))
        by_dir.setdefault(directory, []).append(fact)
    return [
        _finding("CH015", f"{len(files)} file(s), {_mib(sum(f.size for f in files))}", directory.rstrip("/"))
        for directory, files in sorted(by_dir.items())
    ]


# --- all of it -------------------------------------------------------------------------------


def lint_config(
    config: bytes | Mapping[str, object],
    manifest: Mapping[str, object],
    reference: str,
    *,
    size_limit: int = DEFAULT_SIZE_LIMIT,
    passwd: bytes | None = None,
) -> list[Finding]:
    """The checks a config, a manifest and a reference answer, without the layers' files."""
    image = parse_config(config)
    findings = [
        *check_user(image, passwd),
        *check_healthcheck(image),
        *check_env(image),
        *check_history(image),
        *check_labels(image),
        *check_tag(reference),
        *check_base(image, _annotations(manifest)),
        *check_ports(image),
        *check_size(manifest, size_limit),
    ]
    return sort_findings(findings)


def lint_image(
    config: bytes | Mapping[str, object],
    manifest: Mapping[str, object],
    reference: str,
    files: FileFacts | None,
    *,
    size_limit: int = DEFAULT_SIZE_LIMIT,
) -> list[Finding]:
    """Every check, sorted by severity then id. `files` None: the layers were not read (config checks only)."""
    facts = files or FileFacts()
    findings = [
        *lint_config(config, manifest, reference, size_limit=size_limit, passwd=facts.passwd),
        *check_accounts(facts.passwd, facts.shadow),
        *check_special(facts),
        *check_world_writable(facts),
        *check_file_secrets(facts),
        *check_caches(facts),
    ]
    return sort_findings(findings)


def findings_json(findings: Sequence[Finding]) -> list[dict[str, object]]:
    """Findings as JSON-ready dicts (for the CLI's --json and the worker's stored report)."""
    return [
        {
            "id": f.id,
            "name": f.name,
            "severity": f.severity,
            "title": f.title,
            "detail": f.detail,
            "location": f.location,
            "layer": f.layer,
        }
        for f in findings
    ]
