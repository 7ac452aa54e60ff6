"""cargohold lint's engine: each check fires on its bad case and is quiet on a clean image; secrets are
found across chunk boundaries and in layers a later one deletes, and never shown whole.

No key material or token is written here: keys are made with `cryptography` as the tests run, tokens
are put together from parts (so no scanner of this repository sees one).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import string
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from cargohold.supply import secrets
from cargohold.supply.layers import walk_layers
from cargohold.supply.lint import (
    CHECKS,
    DEFAULT_SIZE_LIMIT,
    FileFacts,
    Finding,
    LintInputError,
    PathFact,
    lint_config,
    lint_image,
)
from cargohold.supply.lintfiles import LintInterest

# --- fakes, made at run time -----------------------------------------------------------------

_rng = random.Random(20240601)


def _chars(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def fake_github_token() -> str:
    return "gh" + "p_" + _chars(36)


def fake_aws_key_id() -> str:
    return "AK" + "IA" + _chars(16, string.ascii_uppercase + string.digits)


def fake_gitlab_token() -> str:
    return "gl" + "pat-" + _chars(20)


def fake_stripe_key() -> str:
    return "sk" + "_live_" + _chars(24)


def fake_slack_token() -> str:
    return "xo" + "xb-" + _chars(12, string.digits) + "-" + _chars(24)


def fake_google_key() -> str:
    return "AI" + "za" + _chars(35)


def fake_npm_token() -> str:
    return "np" + "m_" + _chars(36)


def fake_pypi_token() -> str:
    return "py" + "pi-AgEI" + _chars(60)


def rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def openssh_pem() -> bytes:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )


def ec_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def all_text(findings: list[Finding]) -> str:
    return "\n".join(f"{f.id} {f.severity} {f.title} {f.detail} {f.location} {f.layer}" for f in findings)


def ids(findings: list[Finding]) -> list[str]:
    return [f.id for f in findings]


# --- images ----------------------------------------------------------------------------------


def image_config(**container: object) -> dict[str, object]:
    base: dict[str, object] = {
        "User": "app",
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
        "Healthcheck": {"Test": ["CMD", "/app/health"], "Interval": 30_000_000_000},
        "Labels": {"org.opencontainers.image.source": "https://example.com/app.git"},
    }
    base.update(container)
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": base,
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [
            {"created_by": "/bin/sh -c #(nop) ADD file:0123abcd in / "},
            {"created_by": "RUN /bin/sh -c apt-get update && apt-get install -y curl # buildkit"},
        ],
    }


def manifest(sizes: tuple[int, ...] = (30 << 20,), annotations: dict[str, str] | None = None) -> dict[str, object]:
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "0" * 64, "size": 1},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "1" * 64, "size": size}
            for size in sizes
        ],
    }
    if annotations is not None:
        document["annotations"] = annotations
    return document


CLEAN_REF = "registry.example.com/team/app:1.4.2"


def config_bytes(**container: object) -> bytes:
    return json.dumps(image_config(**container)).encode()


# --- the config checks -----------------------------------------------------------------------


def test_a_clean_image_has_no_findings() -> None:
    assert lint_image(config_bytes(), manifest(), CLEAN_REF, FileFacts()) == []


def test_the_id_table_is_in_the_docstring_and_the_constant() -> None:
    from cargohold.supply import lint

    assert lint.__doc__ is not None
    for check in CHECKS:
        assert f"{check.id}   {check.name}" in lint.__doc__
    assert len({c.id for c in CHECKS}) == len(CHECKS)


@pytest.mark.parametrize("user", ["", "root", "0", "0:0", "root:root", "0:1000"])
def test_runs_as_root(user: str) -> None:
    findings = lint_config(config_bytes(User=user), manifest(), CLEAN_REF)
    assert ids(findings) == ["CH001"]
    assert findings[0].severity == "HIGH" and findings[0].location == "config.User"


@pytest.mark.parametrize("user", ["app", "1000", "1000:1000", "nobody:nogroup"])
def test_a_user_is_not_root(user: str) -> None:
    assert lint_config(config_bytes(User=user), manifest(), CLEAN_REF) == []


def test_a_named_user_with_uid_0_runs_as_root() -> None:
    passwd = b"root:x:0:0:root:/root:/bin/sh\napp:x:0:0::/app:/bin/sh\n"
    findings = lint_image(config_bytes(User="app"), manifest(), CLEAN_REF, FileFacts(passwd=passwd))
    assert sorted(ids(findings)) == ["CH001", "CH014"]


def test_no_config_section_at_all_is_root_without_healthcheck() -> None:
    findings = lint_config(b'{"architecture": "amd64", "os": "linux"}', manifest(), CLEAN_REF)
    assert ids(findings) == ["CH001", "CH002"]


@pytest.mark.parametrize("healthcheck", [None, {"Test": ["NONE"]}, {"Test": []}, {}])
def test_no_healthcheck(healthcheck: dict[str, object] | None) -> None:
    config = image_config()
    container = config["config"]
    assert isinstance(container, dict)
    if healthcheck is None:
        del container["Healthcheck"]
    else:
        container["Healthcheck"] = healthcheck
    findings = lint_config(config, manifest(), CLEAN_REF)
    assert ids(findings) == ["CH002"] and findings[0].severity == "LOW"


def test_secret_named_env_is_reported_redacted() -> None:
    value = "s3cr3t-" + _chars(20)
    findings = lint_config(config_bytes(Env=["DB_PASSWORD=" + value, "LANG=C"]), manifest(), CLEAN_REF)
    assert ids(findings) == ["CH003"]
    assert findings[0].location == "config.Env[0]"
    assert "DB_PASSWORD" in findings[0].detail
    assert value not in all_text(findings)
    assert value[:4] + "…(27 chars)" in findings[0].detail


@pytest.mark.parametrize(
    "env",
    [
        "DB_PASSWORD_FILE=/run/secrets/db",
        "API_TOKEN=",
        "GITHUB_TOKEN=$GITHUB_TOKEN",
        "SECRET_KEY_PATH=/etc/app/key",
        "PASSWORD=changeme",
        "TOKEN_URL=https://auth.example.com/token",
        "AWS_ACCESS_KEY_ID_NAME=x",
        "KEYBOARD=us",
    ],
)
def test_env_that_only_points_to_a_secret_is_quiet(env: str) -> None:
    assert lint_config(config_bytes(Env=[env]), manifest(), CLEAN_REF) == []


def test_a_token_in_any_env_is_reported_at_its_rules_severity() -> None:
    token = fake_github_token()
    findings = lint_config(config_bytes(Env=["SOMETHING=" + token]), manifest(), CLEAN_REF)
    assert ids(findings) == ["CH003"]
    assert findings[0].severity == "CRITICAL" and "GitHub token" in findings[0].detail
    assert token not in all_text(findings)


def test_password_in_a_url_in_env() -> None:
    password = _chars(16)
    findings = lint_config(
        config_bytes(Env=[f"DATABASE_URL=postgres://app:{password}@db:5432/app"]), manifest(), CLEAN_REF
    )
    assert ids(findings) == ["CH003"] and "password in a URL" in findings[0].detail
    assert password not in all_text(findings)


def test_build_args_leak_into_history() -> None:
    token = _chars(24)
    config = image_config()
    history = config["history"]
    assert isinstance(history, list)
    history.append({"created_by": f"RUN |2 NPM_TOKEN={token} DEBUG=1 /bin/sh -c npm ci # buildkit"})
    history.append({"created_by": f"|1 API_KEY={token}x /bin/sh -c make"})
    findings = lint_config(config, manifest(), CLEAN_REF)
    assert ids(findings) == ["CH004", "CH004"]
    assert [f.location for f in findings] == ["history[2]", "history[3]"]
    assert "NPM_TOKEN" in findings[0].detail and "API_KEY" in findings[1].detail
    assert token not in all_text(findings)


def test_an_overwritten_env_secret_stays_in_history() -> None:
    value = _chars(18)
    config = image_config(Env=["PATH=/usr/bin", "ADMIN_PASSWORD=" + value])
    history = config["history"]
    assert isinstance(history, list)
    history.append({"created_by": "/bin/sh -c #(nop)  ENV ADMIN_PASSWORD=" + value, "empty_layer": True})
    history.append({"created_by": "ENV SERVICE_SECRET=old" + value + " # buildkit", "empty_layer": True})
    findings = lint_config(config, manifest(), CLEAN_REF)
    # The ENV still in the config is CH003's and not repeated; the overwritten one is history's.
    assert sorted((f.id, f.location) for f in findings) == [("CH003", "config.Env[1]"), ("CH004", "history[3]")]
    assert value not in all_text(findings)


def test_a_token_in_a_run_command() -> None:
    token = fake_github_token()
    config = image_config()
    history = config["history"]
    assert isinstance(history, list)
    history.append({"created_by": f"RUN /bin/sh -c GITHUB_TOKEN={token} git clone https://x.example/r.git"})
    findings = lint_config(config, manifest(), CLEAN_REF)
    assert ids(findings) == ["CH004"]  # one finding, not one per rule that sees it
    assert findings[0].severity == "CRITICAL"
    assert token not in all_text(findings)


def test_secret_in_a_label() -> None:
    token = fake_slack_token()
    labels = {"com.example.deploy.token": "plain-" + _chars(12), "notify": token}
    findings = lint_config(config_bytes(Labels=labels), manifest(), CLEAN_REF)
    assert sorted(ids(findings)) == ["CH011", "CH011"]
    assert token not in all_text(findings) and labels["com.example.deploy.token"] not in all_text(findings)


@pytest.mark.parametrize(
    "reference",
    ["registry.example.com/team/app:latest", "registry.example.com/team/app", "alpine", "alpine:latest"],
)
def test_latest_tag(reference: str) -> None:
    findings = lint_config(config_bytes(), manifest(), reference)
    assert ids(findings) == ["CH006"] and findings[0].severity == "MEDIUM"


@pytest.mark.parametrize("reference", ["alpine:3.19", "alpine@sha256:" + "a" * 64, "app:latest@sha256:" + "b" * 64])
def test_pinned_tag(reference: str) -> None:
    assert lint_config(config_bytes(), manifest(), reference) == []


def test_latest_base_from_the_annotation_or_the_label() -> None:
    annotated = lint_config(
        config_bytes(), manifest(annotations={"org.opencontainers.image.base.name": "debian"}), CLEAN_REF
    )
    assert ids(annotated) == ["CH007"] and annotated[0].severity == "MEDIUM"
    assert annotated[0].location.startswith("manifest.annotations")
    labels = {"org.opencontainers.image.base.name": "docker.io/library/debian:latest"}
    labelled = lint_config(config_bytes(Labels=labels), manifest(), CLEAN_REF)
    assert ids(labelled) == ["CH007"] and labelled[0].location.startswith("config.Labels")
    recorded = manifest(
        annotations={
            "org.opencontainers.image.base.name": "debian:latest",
            "org.opencontainers.image.base.digest": "sha256:" + "c" * 64,
        }
    )
    assert [(f.id, f.severity) for f in lint_config(config_bytes(), recorded, CLEAN_REF)] == [("CH007", "LOW")]
    pinned = manifest(annotations={"org.opencontainers.image.base.name": "debian:12.5-slim"})
    assert lint_config(config_bytes(), pinned, CLEAN_REF) == []


def test_ssh_port() -> None:
    findings = lint_config(config_bytes(ExposedPorts={"22/tcp": {}, "8080/tcp": {}}), manifest(), CLEAN_REF)
    assert ids(findings) == ["CH012"]
    assert lint_config(config_bytes(ExposedPorts={"2222/tcp": {}}), manifest(), CLEAN_REF) == []


def test_image_size() -> None:
    assert lint_config(config_bytes(), manifest((600 << 20, 400 << 20)), CLEAN_REF) == []
    over = lint_config(config_bytes(), manifest((700 << 20, 400 << 20)), CLEAN_REF)
    assert [(f.id, f.severity) for f in over] == [("CH010", "LOW")]
    far_over = lint_config(config_bytes(), manifest((3 << 30,)), CLEAN_REF)
    assert [(f.id, f.severity) for f in far_over] == [("CH010", "MEDIUM")]
    limited = lint_config(config_bytes(), manifest((11 << 20,)), CLEAN_REF, size_limit=10 << 20)
    assert ids(limited) == ["CH010"]
    assert DEFAULT_SIZE_LIMIT == 1 << 30


def test_findings_are_sorted_by_severity_then_id() -> None:
    config = image_config(User="", ExposedPorts={"22/tcp": {}}, Env=["X=" + fake_github_token()])
    del config["config"]["Healthcheck"]  # type: ignore[attr-defined]
    findings = lint_image(config, manifest((2 << 30,)), "app", FileFacts())
    assert [(f.severity, f.id) for f in findings] == [
        ("CRITICAL", "CH003"),
        ("HIGH", "CH001"),
        ("MEDIUM", "CH006"),
        ("MEDIUM", "CH012"),
        ("LOW", "CH002"),
        ("LOW", "CH010"),
    ]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "the document is list"),
        (b'{"config": {"Env": "A=b"}}', "config.Env is str"),
        (b'{"config": {"User": 0}}', "config.User is int"),
        (b'{"config": {"Labels": {"a": 1}}}', "config.Labels['a'] is int"),
        (b'{"history": [{"created_by": 3}]}', "history[0].created_by is int"),
        (b'{"config": {"Healthcheck": {"Test": "CMD"}}}', "config.Healthcheck.Test is str"),
    ],
)
def test_a_malformed_config_names_the_field(config: bytes, message: str) -> None:
    with pytest.raises(LintInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        lint_config(config, manifest(), CLEAN_REF)


def test_a_manifest_without_layers_is_refused() -> None:
    with pytest.raises(LintInputError, match="layers is missing"):
        lint_config(config_bytes(), {"manifests": []}, CLEAN_REF)
    with pytest.raises(LintInputError, match=r"layers\[0\].size"):
        lint_config(config_bytes(), {"layers": [{"digest": "sha256:" + "1" * 64}]}, CLEAN_REF)


def test_accounts_with_empty_passwords() -> None:
    shadow = b"root:*:19000:0:99999:7:::\nguest::19000:0:99999:7:::\nlocked:!:19000::::::\n"
    passwd = b"root:x:0:0:root:/root:/bin/sh\nold::1001:1001::/home/old:/bin/sh\ntoor:x:0:0::/root:/bin/sh\n"
    findings = lint_image(config_bytes(), manifest(), CLEAN_REF, FileFacts(passwd=passwd, shadow=shadow))
    assert [(f.id, f.location, f.detail) for f in findings] == [
        ("CH013", "etc/passwd", "'old' has an empty password"),
        ("CH013", "etc/shadow", "'guest' has an empty password"),
        ("CH014", "etc/passwd", "'toor' has uid 0"),
    ]


# --- the secrets scanner ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "rule"),
    [
        (fake_github_token, "github-token"),
        (lambda: "github_" + "pat_" + _chars(22) + "_" + _chars(59), "github-pat"),
        (fake_aws_key_id, "aws-access-key-id"),
        (lambda: "aws_secret_access_key = " + _chars(40, string.ascii_letters + "/+"), "aws-secret-access-key"),
        (fake_gitlab_token, "gitlab-token"),
        (fake_slack_token, "slack-token"),
        (fake_stripe_key, "stripe-live-key"),
        (fake_google_key, "google-api-key"),
        (fake_npm_token, "npm-token"),
        (fake_pypi_token, "pypi-token"),
        (lambda: "ey" + "J" + _chars(20) + ".ey" + "J" + _chars(30) + "." + _chars(43), "jwt"),
        (lambda: rsa_pem().decode(), "private-key"),
        (lambda: openssh_pem().decode(), "private-key"),
        (lambda: ec_pem().decode(), "private-key"),
    ],
)
def test_each_token_format_is_found(make: Callable[[], str], rule: str) -> None:
    text = make()
    found = secrets.scan_bytes(b"some text before\n" + text.encode() + b"\nand after\n")
    assert [m.rule for m in found] == [rule]
    if rule != "private-key":
        assert text not in found[0].redacted


def test_pgp_private_block() -> None:
    block = b"-----BEGIN PGP " + b"PRIVATE KEY BLOCK-----\n\n" + _chars(64).encode() + b"\n"
    assert [m.rule for m in secrets.scan_bytes(block)] == ["private-key"]


def test_a_private_key_marker_alone_is_not_a_key() -> None:
    """Crypto libraries hold the marker as a constant; a key has material after it."""
    marker = b"-----BEGIN OPENSSH " + b"PRIVATE KEY-----"
    assert secrets.scan_bytes(b'_SK_START = b"' + marker + b'"\n_SK_END = b"-----END"\n') == []
    key_file = json.dumps({"type": "service_account", "private_key": rsa_pem().decode()}).encode()
    assert b"-----\\nMII" in key_file  # JSON writes the newlines out
    found = secrets.scan_bytes(key_file)
    assert [m.rule for m in found] == ["private-key"]


def test_an_encrypted_pem_key_with_headers() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"pass" + b"phrase"),
    )
    assert b"DEK-Info" in pem
    assert [m.rule for m in secrets.scan_bytes(pem)] == ["private-key"]


def test_public_material_is_not_a_secret() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    text = public + b"\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\nAKIA-not-a-key\n"
    assert secrets.scan_bytes(text) == []


@pytest.mark.parametrize("chunk_size", [1, 3, 64, 500, 511, 512, 513, 1000, 4096])
def test_a_match_across_a_chunk_boundary_is_found_once(chunk_size: int) -> None:
    token = fake_github_token().encode()
    key = fake_aws_key_id().encode()
    data = (
        b"a" * 997
        + b" "
        + token
        + b"\n"
        + b"b" * 2048
        + b"\n"
        + key
        + b" "
        + b"pad" * 300
        + b"\npassword: 'x"
        + b"y" * 20
        + b"'\n"
    )
    rules = secrets.rules_for("srv/app/config.yaml")
    whole = secrets.scan_bytes(data, rules)
    assert [m.rule for m in whole] == ["github-token", "aws-access-key-id", "config-password"]
    scanner = secrets.SecretScanner(rules)
    for start in range(0, len(data), chunk_size):
        scanner.feed(data[start : start + chunk_size])
    assert scanner.result() == whole


def test_the_boundary_cut_right_through_a_token() -> None:
    token = fake_github_token().encode()
    for cut in range(1, len(token)):
        scanner = secrets.SecretScanner()
        scanner.feed(b"x" * 5000 + b" " + token[:cut])
        scanner.feed(token[cut:] + b" " + b"y" * 5000)
        assert [(m.rule, m.offset) for m in scanner.result()] == [("github-token", 5001)]


def test_binary_files_are_not_read_further() -> None:
    scanner = secrets.SecretScanner(sniff_binary=True)
    scanner.feed(b"\x7fELF\x00\x01" + fake_github_token().encode())
    assert scanner.binary and scanner.result() == []


def test_credential_files() -> None:
    auth = _chars(32)
    docker = json.dumps({"auths": {"registry.example.com": {"auth": auth}}}).encode()
    assert [m.rule for m in secrets.scan_bytes(docker, secrets.rules_for("root/.docker/config.json"))] == [
        "docker-config-auth"
    ]
    password = _chars(14)
    git = f"https://user:{password}@git.example.com\n".encode()
    found = secrets.scan_bytes(git, secrets.rules_for("home/u/.git-credentials"))
    assert "git-credentials" in [m.rule for m in found]
    npmrc = b"//registry.npmjs.org/:_authToken=" + _chars(20).encode() + b"\n"
    assert [m.rule for m in secrets.scan_bytes(npmrc, secrets.rules_for("root/.npmrc"))] == ["npmrc-auth"]
    pypirc = b"[pypi]\nusername = __token__\npassword = " + _chars(20).encode() + b"\n"
    assert [m.rule for m in secrets.scan_bytes(pypirc, secrets.rules_for("root/.pypirc"))] == ["pypirc-password"]
    netrc = b"machine api.example.com login bot password " + _chars(18).encode() + b"\n"
    assert [m.rule for m in secrets.scan_bytes(netrc, secrets.rules_for("root/.netrc"))] == ["netrc-password"]
    assert all(password not in m.redacted for m in found)


def test_examples_and_placeholders_are_not_secrets() -> None:
    documented = "AKIA" + "IOSFODNN7" + "EXAMPLE"  # AWS's own documentation key
    assert secrets.scan_bytes(f"key = {documented}".encode()) == []
    for value in ("your-token-here", "xxxxxxxx", "********", "${DB_PASSWORD}"):
        line = f'password = "{value}"\n'.encode()
        assert secrets.scan_bytes(line, secrets.rules_for("etc/app.ini")) == [], value


def test_context_rules_only_where_a_value_is_expected() -> None:
    """Library code is full of `https://user:pass@host` and sample JWTs; configuration is not."""
    password = _chars(12)
    jwt = "ey" + "J" + _chars(20) + ".ey" + "J" + _chars(30) + "." + _chars(43)
    text = f'"""Use it as proxy("http://user:{password}@proxy:3128")."""\nTOKEN = "{jwt}"\n'.encode()
    library = "usr/local/lib/python3.12/site-packages/requests/utils.py"
    assert secrets.should_scan(library, len(text))
    assert secrets.scan_bytes(text, secrets.rules_for(library)) == []
    assert [m.rule for m in secrets.scan_bytes(text, secrets.rules_for("app/settings.yaml"))] == [
        "url-credentials",
        "jwt",
    ]


def test_config_passwords_only_in_config_files_and_not_in_comments() -> None:
    text = b"# password = 'commented-out'\nadmin_password = \"" + _chars(12).encode() + b'"\nsecret = "changeme"\n'
    assert [m.rule for m in secrets.scan_bytes(text, secrets.rules_for("etc/app/app.conf"))] == ["config-password"]
    assert secrets.scan_bytes(text, secrets.rules_for("app/main.c")) == []


@pytest.mark.parametrize(
    ("path", "scanned"),
    [
        ("etc/ssl/private/server.key", True),
        ("app/config/settings.yaml", True),
        ("app/tests/fixtures/key.pem", True),  # an application's own tests are its own
        ("usr/share/doc/openssl/demo/key.pem", False),
        ("usr/share/ca-certificates/mozilla/X.crt", False),
        ("usr/lib/python3.11/test/keycert.pem", False),
        ("usr/local/lib/python3.12/site-packages/tornado/test/test.key", False),
        ("app/node_modules/ws/test/fixtures/key.pem", False),
        ("usr/include/openssl/pem.h", False),
        ("var/lib/dpkg/status", False),
        ("app/.env.example", False),
        ("usr/lib/x86_64-linux-gnu/libssl.so.3", False),
        ("usr/share/doc/x/.git-credentials", True),  # a credential file is scanned anywhere
        ("usr/src/app/config/key.pem", True),  # where node's images put the application
        ("usr/src/app/tests/key.pem", True),
        ("opt/app/tests/key.pem", True),
        ("usr/lib/google-cloud-sdk/third_party/urllib3/dummyserver/certs/server.key", False),
        ("root/.docker/config.json", True),
    ],
)
def test_which_files_are_scanned(path: str, scanned: bool) -> None:
    assert secrets.should_scan(path, 100) is scanned


def test_large_and_empty_files_are_not_scanned() -> None:
    assert not secrets.should_scan("app/a.conf", secrets.MAX_SCAN_SIZE + 1)
    assert not secrets.should_scan("app/a.conf", 0)


@pytest.mark.parametrize(
    ("value", "shown"), [("abcdefghijklmnop", "abcd…(16 chars)"), ("abcdef", "ab…(6 chars)"), ("ab", "…(2 chars)")]
)
def test_redact(value: str, shown: str) -> None:
    assert secrets.redact(value) == shown
    assert secrets.redact(value.encode()) == shown


# --- the files, through the layer walk -------------------------------------------------------


@dataclass
class Member:
    path: str
    data: bytes = b""
    mode: int = 0o644
    kind: bytes = tarfile.REGTYPE
    target: str = ""


def layer(*members: Member) -> tuple[str, str, Callable[[], BinaryIO]]:
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as archive:
        for member in members:
            info = tarfile.TarInfo(member.path)
            info.type = member.kind
            info.mode = member.mode
            info.linkname = member.target
            info.size = len(member.data) if member.kind == tarfile.REGTYPE else 0
            archive.addfile(info, io.BytesIO(member.data) if member.kind == tarfile.REGTYPE else None)
    blob = gzip.compress(plain.getvalue())
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    return digest, "application/vnd.oci.image.layer.v1.tar+gzip", lambda: io.BytesIO(blob)


def lint_layers(*layers: tuple[str, str, Callable[[], BinaryIO]], user: str = "app") -> list[Finding]:
    interest = LintInterest()
    merged = walk_layers(list(layers), [interest])
    return lint_image(config_bytes(User=user), manifest(), CLEAN_REF, interest.facts(merged))


def directory(path: str, mode: int = 0o755) -> Member:
    return Member(path, mode=mode, kind=tarfile.DIRTYPE)


BASE = (
    directory("etc"),
    directory("tmp", 0o1777),
    directory("usr"),
    directory("usr/bin"),
    Member("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n"),
    Member("etc/shadow", b"root:*:19000:0:99999:7:::\napp:!:19000:0:99999:7:::\n", mode=0o640),
    Member("usr/bin/env", b"\x7fELF\x00binary", mode=0o755),
    Member("etc/app.conf", b"listen = 8080\npassword_file = '/run/secrets/pw'\n"),
)


def test_a_clean_filesystem_has_no_findings() -> None:
    assert lint_layers(layer(*BASE)) == []


def test_setuid_files() -> None:
    findings = lint_layers(
        layer(
            *BASE,
            Member("usr/bin/su", b"\x7fELF\x00", mode=0o4755),
            Member("bin/mount", b"\x7fELF\x00", mode=0o4755),
            Member("usr/bin/chage", b"\x7fELF\x00", mode=0o2755),
            Member("usr/local/bin/helper", b"\x7fELF\x00", mode=0o6755),
        )
    )
    assert [(f.id, f.severity) for f in findings] == [("CH009", "MEDIUM"), ("CH009", "LOW")]
    assert findings[0].location.endswith(":usr/local/bin/helper") and "setuid and setgid" in findings[0].detail
    assert findings[0].layer is not None and findings[0].location == f"layer {findings[0].layer}:usr/local/bin/helper"
    assert findings[1].detail.startswith("3 setuid/setgid file(s)")


def test_a_setuid_file_a_later_layer_removes_is_not_in_the_final_filesystem() -> None:
    first = layer(*BASE, Member("usr/local/bin/helper", b"\x7fELF\x00", mode=0o4755))
    second = layer(Member("usr/local/bin/.wh.helper"))
    assert lint_layers(first, second) == []


def test_world_writable_paths() -> None:
    findings = lint_layers(
        layer(
            *BASE,
            directory("srv", 0o777),
            Member("srv/data.txt", b"hello", mode=0o666),
            Member("srv/link", kind=tarfile.SYMTYPE, target="data.txt", mode=0o777),
        )
    )
    assert [(f.id, f.location.rsplit(":", 1)[1]) for f in findings] == [("CH008", "srv"), ("CH008", "srv/data.txt")]
    assert all(f.severity == "MEDIUM" for f in findings)


def test_a_directory_a_later_layer_closes_is_not_world_writable() -> None:
    first = layer(*BASE, directory("srv", 0o777))
    second = layer(directory("srv", 0o755))
    assert lint_layers(first, second) == []
    assert [f.id for f in lint_layers(second, first)] == ["CH008"]


def test_secret_in_a_file() -> None:
    pem = rsa_pem()
    findings = lint_layers(layer(*BASE, directory("etc/ssl"), Member("etc/ssl/private/key.pem", pem, mode=0o600)))
    assert [(f.id, f.severity) for f in findings] == [("CH005", "CRITICAL")]
    assert findings[0].location == f"layer {findings[0].layer}:etc/ssl/private/key.pem"
    assert "deleted" not in findings[0].detail
    body = pem.decode().splitlines()[1]
    assert body not in all_text(findings)


def test_a_secret_a_later_layer_deletes_is_still_reported_with_its_layer() -> None:
    token = fake_npm_token()
    first = layer(
        *BASE, directory("root"), Member("root/.npmrc", f"//registry.npmjs.org/:_authToken={token}\n".encode())
    )
    second = layer(Member("root/.wh..npmrc"))
    findings = lint_layers(first, second)
    assert {f.id for f in findings} == {"CH005"}
    assert {f.layer for f in findings} == {first[0]}
    assert all("deleted or replaced by a later layer" in f.detail for f in findings)
    assert token not in all_text(findings)


def test_a_secret_a_later_layer_overwrites_is_still_reported() -> None:
    key = fake_aws_key_id()
    first = layer(*BASE, directory("app"), Member("app/settings.py", f"AWS_KEY = '{key}'\n".encode()))
    second = layer(directory("app"), Member("app/settings.py", b"AWS_KEY = os.environ['AWS_KEY']\n"))
    findings = lint_layers(first, second)
    assert [(f.id, f.layer) for f in findings] == [("CH005", first[0])]
    assert "deleted or replaced" in findings[0].detail


def test_an_opaque_directory_hides_but_does_not_remove_a_secret() -> None:
    token = fake_gitlab_token()
    first = layer(*BASE, directory("app"), Member("app/deploy.sh", f"export GL={token}\n".encode(), mode=0o755))
    second = layer(directory("app"), Member("app/.wh..wh..opq"), Member("app/run.sh", b"#!/bin/sh\nexec app\n"))
    findings = lint_layers(first, second)
    assert [(f.id, f.layer) for f in findings] == [("CH005", first[0])]


def test_the_size_limit_through_the_walk() -> None:
    """A file up to 1 MiB is read (the walk gives it in one chunk: boundaries are the scanner tests' job)."""
    token = fake_github_token().encode()
    at_limit = b"x" * (secrets.MAX_SCAN_SIZE - len(token) - 1) + b" " + token
    assert len(at_limit) == secrets.MAX_SCAN_SIZE
    findings = lint_layers(layer(*BASE, directory("app"), Member("app/notes.txt", at_limit)))
    assert [f.id for f in findings] == ["CH005"]
    over = lint_layers(layer(*BASE, directory("app"), Member("app/notes.txt", b"y" + at_limit)))
    assert over == []


def test_no_false_positive_on_distribution_test_certificates() -> None:
    pem = rsa_pem()
    findings = lint_layers(
        layer(
            *BASE,
            directory("usr/share"),
            Member("usr/share/doc/python3/examples/keycert.pem", pem),
            Member("usr/share/ca-certificates/mozilla/Example_Root.crt", b"-----BEGIN CERTIFICATE-----\nMIIB\n"),
            Member("usr/lib/python3.11/test/certdata/keycert.pem", pem),
            Member("usr/lib/python3/dist-packages/urllib3/tests/server.key", pem),
            Member("app/.env.example", b"API_TOKEN=" + fake_github_token().encode() + b"\n"),
        )
    )
    assert findings == []


def test_a_token_in_a_library_is_reported_low() -> None:
    key = fake_google_key()
    findings = lint_layers(
        layer(
            *BASE,
            Member("usr/lib/vendor-sdk/client.py", f'API_KEY = "{key}"\n'.encode()),
            Member("usr/lib/vendor-sdk/data/flow.yaml", b'client_secret: "' + _chars(16).encode() + b'"\n'),
        )
    )
    assert [(f.id, f.severity) for f in findings] == [("CH005", "LOW")]
    assert "library" in findings[0].detail and key not in all_text(findings)


def test_account_files_from_the_final_filesystem() -> None:
    second = layer(directory("etc"), Member("etc/shadow", b"root::19000:0:99999:7:::\n", mode=0o640))
    assert [(f.id, f.location) for f in lint_layers(layer(*BASE), second)] == [("CH013", "etc/shadow")]


def test_package_caches() -> None:
    lists = layer(
        *BASE,
        directory("var/lib/apt/lists"),
        Member("var/lib/apt/lists/lock"),
        Member("var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease", b"x" * 2048),
        Member("var/cache/apk/APKINDEX.1234.tar.gz", b"y" * 1024),
    )
    findings = lint_layers(lists)
    assert [(f.id, f.location) for f in findings] == [("CH015", "var/cache/apk"), ("CH015", "var/lib/apt/lists")]
    cleaned = layer(
        directory("var/lib/apt/lists"), Member("var/lib/apt/lists/.wh..wh..opq"), Member("var/cache/.wh.apk")
    )
    assert lint_layers(lists, cleaned) == []


def test_the_redaction_holds_for_every_finding() -> None:
    """A dirty image: not one finding's text holds a secret whole."""
    values = [fake_github_token(), fake_stripe_key(), _chars(20), fake_google_key(), _chars(16)]
    history_config = image_config(
        User="root",
        Env=["STRIPE=" + values[1], "DB_PASSWORD=" + values[2]],
        Labels={"api_key": values[3]},
    )
    history = history_config["history"]
    assert isinstance(history, list)
    history.append({"created_by": f"RUN |1 TOKEN={values[4]} /bin/sh -c build"})
    first = layer(*BASE, directory("app"), Member("app/config.yaml", f"token: {values[0]}\n".encode()))
    interest = LintInterest()
    facts = interest.facts(walk_layers([first], [interest]))
    findings = lint_image(history_config, manifest(), "app", facts)
    assert {"CH001", "CH003", "CH004", "CH005", "CH006", "CH011"} <= set(ids(findings))
    text = all_text(findings)
    for value in values:
        assert value not in text
        assert value[4:] not in text


def test_the_cli_and_the_worker_get_the_same_findings() -> None:
    """Same inputs, same list: no order or state in the engine depends on who calls it."""
    build = layer(*BASE, Member("usr/local/bin/helper", b"\x7fELF\x00", mode=0o4755), Member("etc/k.pem", rsa_pem()))
    runs = []
    for _ in range(2):
        interest = LintInterest()
        runs.append(
            lint_image(config_bytes(User=""), manifest(), "app", interest.facts(walk_layers([build], [interest])))
        )
    assert runs[0] == runs[1] and runs[0]


def test_facts_can_be_built_by_hand() -> None:
    facts = FileFacts(
        world_writable=tuple(PathFact(f"srv/{n}", "file", 0o666, "sha256:" + "2" * 64) for n in range(30))
    )
    findings = lint_image(config_bytes(), manifest(), CLEAN_REF, facts)
    assert len(findings) == 26 and [f.detail for f in findings].count("5 more not listed") == 1
