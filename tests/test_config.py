"""Settings precedence (defaults < YAML < CARGOHOLD_* < flags) and the errors a person sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cargohold.config import ConfigError, load_config


def test_defaults() -> None:
    config = load_config(environ={})
    assert config.listen == "127.0.0.1:5000"
    assert config.data == Path("./data")
    assert config.fsync is True


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "cargohold.yml"
    file.write_text("listen: 0.0.0.0:6000\nworkers: 3\nfsync: false\ndata: /srv/a\n")
    config = load_config(file, environ={"CARGOHOLD_WORKERS": "2", "CARGOHOLD_DATA": "/srv/b"}, data=Path("/srv/c"))
    assert (config.listen, config.workers, config.fsync, config.data) == ("0.0.0.0:6000", 2, False, Path("/srv/c"))
    assert (config.host, config.port) == ("0.0.0.0", 6000)


def test_round_trip_through_environment(tmp_path: Path) -> None:
    original = load_config(environ={}, listen="127.0.0.1:7000", data=tmp_path, fsync=False)
    assert load_config(environ=original.to_env()) == original


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen: [1, 2]\n", "listen address"),
        ("wrokers: 2\n", "unknown settings"),
        ("workers: many\n", "'workers' has an unusable value"),
        ("fsync: perhaps\n", "'fsync' has an unusable value"),
        ("- a\n- b\n", "must hold a mapping"),
        ("listen: [unclosed\n", "cannot read config file"),
        ("listen: 127.0.0.1:99999\n", "port from 0 to 65535"),
        ("listen: '127.0.0.1:\uff15\uff10\uff10\uff10'\n", "port from 0 to 65535"),
        ("log_level: verbose\n", "log_level 'verbose' must be one of debug, info, warning, error"),
        ("body_timeout: 0\n", "body_timeout must be more than 0"),
        ("body_timeout: soon\n", "'body_timeout' has an unusable value"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "bad.yml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(file, environ={})


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.yml"
    file.write_text("workers: 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "cargohold", "serve", "--config", str(file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert result.stderr.strip() == "Error: workers must be at least 1"


def test_cli_help() -> None:
    result = subprocess.run([sys.executable, "-m", "cargohold", "serve", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--listen" in result.stdout and "--data" in result.stdout


def test_lazy_commands_name_what_their_modules_register() -> None:
    """`serve` loads neither the client nor the account tools; the map of which module holds
    which command must stay true, or a command would vanish from the CLI."""
    import click

    from cargohold.cli import auth_commands, client_commands, migrate_command, supply_commands
    from cargohold.cli.main import LAZY_COMMANDS

    registered = {}
    for module in (auth_commands, client_commands, migrate_command, supply_commands):
        group = click.Group()
        module.register(group)
        registered.update(dict.fromkeys(group.commands, module.__name__.rsplit(".", 1)[1]))
    assert registered == LAZY_COMMANDS


def test_serve_imports_neither_the_client_nor_the_account_tools() -> None:
    probe = (
        "import sys; from cargohold.cli.main import cli; cli.get_command(None, 'serve'); "
        "print(sorted(m for m in sys.modules if m.startswith(('cargohold.client', 'cargohold.cli.', 'httpx', 'rich'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['cargohold.cli.main']"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("45s", 45), ("30m", 1800), ("24h", 86400), ("90d", 7776000)]
)
def test_durations(text: str, seconds: float) -> None:
    assert load_config(environ={"CARGOHOLD_UPLOAD_MAX_AGE": text}).upload_max_age == seconds


def test_bad_duration_is_named() -> None:
    with pytest.raises(ConfigError, match="'upload_max_age' has an unusable value '3 fortnights'"):
        load_config(environ={"CARGOHOLD_UPLOAD_MAX_AGE": "3 fortnights"})


def test_immutable_tag_rules(tmp_path: Path) -> None:
    file = tmp_path / "cargohold.yml"
    file.write_text("immutable_tags:\n  - 'prod/*:v*'\n  - '*:release-*'\n")
    config = load_config(file, environ={})
    assert config.immutable_tags == ("prod/*:v*", "*:release-*")
    assert load_config(environ=config.to_env()).immutable_tags == config.immutable_tags
    with pytest.raises(ConfigError, match="must be REPOSITORY_GLOB:TAG_GLOB"):
        load_config(environ={"CARGOHOLD_IMMUTABLE_TAGS": "v*"})


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ("{}", "must be a list"),
        ('[{"keep_last": 3}]', r"retention\[0\] needs a 'repositories' pattern"),
        ('[{"repositories": "a/*", "keep_first": 3}]', "unknown keys: keep_first"),
        ('[{"repositories": "a/*", "keep_last": -1}]', r"retention\[0\]: unusable value"),
        ('[{"repositories": "a/*", "older_than": "soon"}]', r"retention\[0\]: unusable value"),
        ("not json", "JSON in CARGOHOLD_RETENTION"),
    ],
)
def test_bad_retention_policies_are_named(policies: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(environ={"CARGOHOLD_RETENTION": policies})


def test_retention_from_yaml(tmp_path: Path) -> None:
    file = tmp_path / "cargohold.yml"
    file.write_text(
        "retention:\n  - repositories: 'team/*'\n    keep_last: 10\n    keep: ['v*']\n    older_than: 30d\n"
    )
    (policy,) = load_config(file, environ={}).retention
    assert (policy.repositories, policy.keep_last, policy.keep, policy.older_than) == ("team/*", 10, ("v*",), 2592000)


@pytest.mark.parametrize(
    ("quotas", "message"),
    [
        ('[{"limit": "1GiB"}]', "exactly one of `repositories`"),
        ('[{"repositories": "a/*", "namespace": "a", "limit": "1GiB"}]', "exactly one of `repositories`"),
        ('[{"repositories": "a/*"}]', "takes `limit`"),
        ('[{"namespace": "a", "limit": "lots"}]', "not a size"),
    ],
)
def test_bad_quotas_are_named(quotas: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(environ={"CARGOHOLD_QUOTAS": quotas})


def test_quota_sizes() -> None:
    (quota,) = load_config(environ={"CARGOHOLD_QUOTAS": '[{"namespace": "a", "limit": "1.5GiB"}]'}).quotas
    assert quota.limit == int(1.5 * 1024**3)
    (quota,) = load_config(environ={"CARGOHOLD_QUOTAS": '[{"namespace": "a", "limit": "500MB"}]'}).quotas
    assert quota.limit == 500_000_000
