"""`cargohold` commands: a thin layer over the library."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..config import Config, ConfigError, load_config
from ..storage.blobstore import FilesystemBlobStore
from ..storage.metadata import ImmutableTagError, SQLiteMetadataStore


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


def _stores(config: Config) -> tuple[SQLiteMetadataStore, FilesystemBlobStore]:
    if not config.database_path.exists():
        raise click.ClickException(f"no registry data in {config.data.resolve()} (set --data or CARGOHOLD_DATA)")
    return SQLiteMetadataStore(config.database_path), FilesystemBlobStore(config.data, fsync=config.fsync)


@cli.command()
@config_option
@click.option("--listen", help="Address to listen on, HOST:PORT (default 127.0.0.1:5000).")
@data_option
@click.option("--workers", type=int, help="Worker processes (default 1).")
def serve(config_file: Path | None, listen: str | None, data: Path | None, workers: int | None) -> None:
    """Run the registry with SQLite metadata and filesystem blobs under the data directory."""
    from ..server import serve as run_server

    config = _config(config_file, listen=listen, data=data, workers=workers)
    click.echo(
        f"cargohold {__version__}: registry on http://{config.listen}/v2/, data in {config.data.resolve()}", err=True
    )
    run_server(config)


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
def gc(
    config_file: Path | None,
    data: Path | None,
    dry_run: bool,
    grace: str | None,
    untagged_age: str | None,
    as_json: bool,
) -> None:
    """Free what nothing references, safely while the registry serves pushes.

    Referrers whose subject is gone go too. --dry-run previews blobs only.
    """
    from ..lifecycle.gc import collect_garbage

    config = _config(config_file, data=data, gc_grace=grace, gc_untagged_age=untagged_age)
    report = collect_garbage(*_stores(config), config.gc_grace, dry_run=dry_run, untagged_age=config.gc_untagged_age)
    click.echo(json.dumps(asdict(report), indent=2) if as_json else report.summary())


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
    from ..oci.rules import format_bytes

    config = _config(config_file, data=data)
    meta, _ = _stores(config)
    rows: list[dict[str, Any]] = []
    for name in meta.all_repositories():
        limits = [q.limit for q in config.quotas if q.scope(name) == ("repository", name)]
        rows.append(
            {
                "scope": "repository",
                "name": name,
                "bytes": meta.usage("repository", name),
                "quota": min(limits) if limits else None,
            }
        )
    for quota in config.quotas:
        if quota.namespace is not None:
            rows.append(
                {
                    "scope": "namespace",
                    "name": quota.namespace,
                    "bytes": meta.usage("namespace", quota.namespace),
                    "quota": quota.limit,
                }
            )
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
    from ..oci.errors import RegistryError
    from ..oci.names import validate_name
    from ..oci.rules import parse_rules, protecting_rule

    try:
        validate_name(name)
    except RegistryError as err:
        raise click.ClickException(err.message) from None
    config = _config(config_file, data=data)
    meta, store = _stores(config)
    immutable = protecting_rule(() if force else parse_rules(config.immutable_tags), name)
    try:
        deleted = meta.delete_repository(name, immutable)
    except ImmutableTagError as err:
        raise click.ClickException(
            f"tag {err.tag} of {name} is immutable (rule {err.rule!r}); use --force to delete the repository anyway"
        ) from None
    if deleted is None:
        raise click.ClickException(f"no repository {name}")
    tags, manifests, uploads = deleted
    for upload_id in uploads:
        store.delete_upload(upload_id)
    click.echo(f"deleted {name}: {tags} tag(s), {manifests} manifest(s), {len(uploads)} upload session(s)")


def main() -> None:
    from .client_commands import register as register_client

    register_client(cli)
    cli()
