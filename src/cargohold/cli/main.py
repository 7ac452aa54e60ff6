"""`cargohold` commands: a thin layer over the library."""

from __future__ import annotations

import getpass
import importlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..config import Config, ConfigError, load_config
from ..services import open_blobs
from ..storage.backends import open_metadata
from ..storage.interfaces import BlobStore, MetadataStore
from ..storage.records import BackendUnavailable, ImmutableTagError, StorageSetupError
from ..storage.schema import SchemaError

# Commands that live in other modules, imported only when one of them is named: `serve`
# forks its workers from this process, and the client and the account tools would only add
# start-up time and memory to every worker (and the client's start-up to every `gc`).
LAZY_COMMANDS = {
    **dict.fromkeys(("user", "robot", "token", "policy", "keys", "audit"), "auth_commands"),
    "migrate": "migrate_command",
    **dict.fromkeys(("sbom", "scan", "lint", "vulndb", "scan-worker"), "supply_commands"),
    **dict.fromkeys(
        ("login", "logout", "push", "pull", "copy", "tag", "ls", "inspect", "rm", "digest"), "client_commands"
    ),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            importlib.import_module(f"{__package__}.{LAZY_COMMANDS[cmd_name]}").register(self)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cargohold")
def cli() -> None:
    """cargohold: a container registry and release pipeline in one program."""


config_option = click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML settings file."
)
data_option = click.option(
    "--data", type=click.Path(file_okay=False, path_type=Path), help="Data directory (default ./data)."
)


def _config(config_file: Path | None, **overrides: Any) -> Config:
    try:
        return load_config(config_file, **overrides)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


def _require_data(config: Config) -> None:
    if not config.database and not config.database_path.exists():
        raise click.ClickException(f"no registry data in {config.data.resolve()} (set --data or CARGOHOLD_DATA)")


def _stores(config: Config) -> tuple[MetadataStore, BlobStore]:
    _require_data(config)
    return open_metadata(config.database_target, config.database_timeout), open_blobs(config)


@cli.command()
@config_option
@click.option("--listen", help="Address to listen on, HOST:PORT (default 127.0.0.1:5000).")
@data_option
@click.option("--workers", type=int, help="Worker processes (default 1).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS with this certificate.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="The certificate's private key.")
@click.option("--tls-dev", is_flag=True, default=None, help="Serve HTTPS with a local CA made under <data>/tls.")
def serve(
    config_file: Path | None,
    listen: str | None,
    data: Path | None,
    workers: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_dev: bool | None,
) -> None:
    """Run the registry: by default SQLite metadata and filesystem blobs under the data directory."""
    from ..listener import LISTEN_BACKLOG, ListenError, listen_on

    config = _config(
        config_file, listen=listen, data=data, workers=workers, tls_cert=tls_cert, tls_key=tls_key, tls_dev=tls_dev
    )
    try:  # first thing: clients of a restarting registry then wait in the backlog rather than fail
        # With several workers granian's own sockets serve: this one only proves the port free.
        listener = listen_on(config.host, config.port, LISTEN_BACKLOG if config.workers == 1 else None)
    except ListenError as err:
        raise click.ClickException(str(err)) from None
    port = listener.getsockname()[1]
    if port != config.port:  # port 0: the system chose one, and everything after must use it
        config.listen = f"{config.listen.rsplit(':', 1)[0]}:{port}"
    # Before any worker starts: the schema is current (a new database is made so), else refused,
    # and the blob store usable (an unreachable one only warned of: it may come back).
    open_metadata(config.database_target).close()
    blobs = open_blobs(config)
    try:
        blobs.check()
    except StorageSetupError as err:
        raise click.ClickException(str(err)) from None
    except BackendUnavailable as err:
        unanswered = f"the {err.backend} does not answer ({err.detail})"
        click.echo(f"Warning: {unanswered}: requests that need it get 503 until it does", err=True)
    finally:
        blobs.close()  # the workers open their own
    from ..server import serve as run_server

    scheme = "https" if config.tls_cert or config.tls_dev else "http"
    auth = "auth on" if config.auth else "AUTH OFF"
    click.echo(
        f"cargohold {__version__}: registry on {scheme}://{config.listen}/v2/ ({auth}), "
        f"data in {config.data.resolve()}",
        err=True,
    )
    run_server(config, listener)


@cli.command()
@config_option
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def scrub(config_file: Path | None, data: Path | None, as_json: bool) -> None:
    """Re-hash every stored blob; exit 1 if any is corrupt, missing or the wrong size."""
    from ..lifecycle.scrub import scrub as run_scrub

    report = run_scrub(*_stores(_config(config_file, data=data)))
    if as_json:
        click.echo(json.dumps(asdict(report) | {"healthy": report.healthy}, indent=2))
    else:
        click.echo(f"checked {report.checked} blob(s), {report.bytes_checked:,} bytes")
        for label, digests in (
            ("corrupt", report.corrupt),
            ("wrong size", report.wrong_size),
            ("missing", report.missing),
            ("unrecorded file (left for garbage collection)", report.unrecorded),
        ):
            for digest in digests:
                click.echo(f"{label}: {digest}")
        click.echo("healthy" if report.healthy else "PROBLEMS FOUND")
    sys.exit(0 if report.healthy else 1)


@cli.command("expire-uploads")
@config_option
@data_option
@click.option("--older-than", help="Idle time after which a session goes, e.g. 24h (default: upload_max_age).")
def expire_uploads_command(config_file: Path | None, data: Path | None, older_than: str | None) -> None:
    """Remove upload sessions that received nothing for a while, and their data."""
    from ..lifecycle.uploads import expire_uploads

    config = _config(config_file, data=data, upload_max_age=older_than)
    expired = expire_uploads(*_stores(config), config.upload_max_age)
    click.echo(f"expired {len(expired)} upload session(s)")


@cli.command()
@config_option
@data_option
@click.option("--dry-run", is_flag=True, help="Report what would be freed; change nothing.")
@click.option("--grace", help="Keep unreferenced blobs used within this long, e.g. 1h (default: gc_grace).")
@click.option("--untagged-age", help="Also collect untagged manifests older than this, e.g. 30d (default: off).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--nice", "niceness", type=click.IntRange(0, 19), default=10, show_default=True,
    help="Lower this process's CPU priority by this much, so pulls served beside it keep their speed.",
)  # fmt: skip
def gc(
    config_file: Path | None,
    data: Path | None,
    dry_run: bool,
    grace: str | None,
    untagged_age: str | None,
    as_json: bool,
    niceness: int,
) -> None:
    """Free what nothing references, safely while the registry serves pushes.

    Referrers whose subject is gone go too, and with --untagged-age untagged manifests.
    --dry-run lists the manifests that would go and counts the blobs and files.
    """
    from ..lifecycle.gc import collect_garbage

    os.nice(niceness)  # measured: pulls kept 0.88 of their speed beside a niced loop, 0.68 beside a normal one
    config = _config(config_file, data=data, gc_grace=grace, gc_untagged_age=untagged_age)
    report = collect_garbage(*_stores(config), config.gc_grace, dry_run=dry_run, untagged_age=config.gc_untagged_age)
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
        return
    if dry_run:
        for manifest in report.manifest_list:
            click.echo(f"would free manifest {manifest}")
    click.echo(report.summary())


@cli.command()
@config_option
@data_option
@click.option("--dry-run", is_flag=True, help="List the tags the policies would delete; delete nothing.")
def retention(config_file: Path | None, data: Path | None, dry_run: bool) -> None:
    """Apply the retention policies of the config: delete the tags they let go."""
    from ..lifecycle.retention import apply_retention
    from ..oci.rules import parse_rules

    config = _config(config_file, data=data)
    if not config.retention:
        raise click.ClickException("no retention policies configured (setting `retention`)")
    meta, _ = _stores(config)
    deleted = apply_retention(meta, config.retention, parse_rules(config.immutable_tags), dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for repo_name, tags in deleted.items():
        click.echo(f"{repo_name}: {verb} {', '.join(tags)}")
    click.echo(f"{verb} {sum(len(t) for t in deleted.values())} tag(s) in {len(deleted)} repositories")


@cli.command()
@config_option
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def usage(config_file: Path | None, data: Path | None, as_json: bool) -> None:
    """Bytes of unique stored blobs per repository and per quota'd namespace, with quotas."""
    from ..lifecycle.usage import usage_report
    from ..oci.rules import format_bytes

    config = _config(config_file, data=data)
    meta, _ = _stores(config)
    rows = usage_report(meta, config.quotas)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        quota = f" of {format_bytes(row['quota'])}" if row["quota"] is not None else ""
        click.echo(f"{row['scope']:<10} {row['name']:<40} {format_bytes(row['bytes'])}{quota}")


@cli.group()
def repo() -> None:
    """Manage repositories."""


@repo.command("rm")
@click.argument("name")
@config_option
@data_option
@click.option("--force", is_flag=True, help="Delete even if immutability rules protect some of its tags.")
def repo_rm(name: str, config_file: Path | None, data: Path | None, force: bool) -> None:
    """Delete repository NAME: its tags, manifests and upload sessions; blobs go at the next gc."""
    from ..lifecycle.usage import delete_repository
    from ..oci.errors import RegistryError
    from ..oci.names import validate_name
    from ..oci.rules import parse_rules, protecting_rule
    from ..storage.events import Actor

    try:
        validate_name(name)
    except RegistryError as err:
        raise click.ClickException(err.message) from None
    config = _config(config_file, data=data)
    meta, store = _stores(config)
    immutable = protecting_rule(() if force else parse_rules(config.immutable_tags), name)
    try:
        deleted = delete_repository(meta, store, name, immutable, Actor(f"cli:{getpass.getuser()}", "local"))
    except ImmutableTagError as err:
        raise click.ClickException(
            f"tag {err.tag} of {name} is immutable (rule {err.rule!r}); use --force to delete the repository anyway"
        ) from None
    if deleted is None:
        raise click.ClickException(f"no repository {name}")
    click.echo(
        f"deleted {name}: {deleted['tags']} tag(s), {deleted['manifests']} manifest(s), "
        f"{deleted['uploads']} upload session(s)"
    )


@cli.group()
def db() -> None:
    """The metadata database's schema: see where it stands, upgrade it."""


@db.command("upgrade")
@config_option
@data_option
def db_upgrade(config_file: Path | None, data: Path | None) -> None:
    """Apply every schema migration the database lacks (back it up first)."""
    from ..storage.schema import redacted, upgrade, upgrade_url

    config = _config(config_file, data=data)
    target = config.database_target
    before, after = upgrade_url(target) if isinstance(target, str) else upgrade(target)
    where = redacted(str(target))
    if before == after:
        click.echo(f"{where}: already at revision {after}")
    else:
        click.echo(f"{where}: upgraded from {before or 'the schema before migrations'} to {after}")


@db.command("current")
@config_option
@data_option
def db_current(config_file: Path | None, data: Path | None) -> None:
    """Print the database's schema revision; exit 1 if it is not the one this cargohold runs on."""
    import sqlite3

    from ..storage.schema import HEAD, current_revision, is_empty, redacted, revision

    config = _config(config_file, data=data)
    _require_data(config)
    target = config.database_target
    if isinstance(target, str):
        found = current_revision(target)
    else:
        with sqlite3.connect(target) as handle:
            found = None if is_empty(handle) else revision(handle) or "before migrations"
        handle.close()
    click.echo(f"{redacted(str(target))}: revision {found or 'none (empty)'}; this cargohold runs on {HEAD}")
    if found != HEAD:
        sys.exit(1)


def main() -> None:
    try:
        cli()
    except SchemaError as err:  # from any command that opens the database
        click.echo(f"Error: {err}", err=True)
        sys.exit(2)
