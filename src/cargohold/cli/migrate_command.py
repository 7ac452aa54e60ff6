"""`cargohold migrate`: copy the registry of the usual settings (the source) to another database
and blob store (the target, given by --to-* flags). The work is `lifecycle.migrate`."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from ..config import Config, ConfigError, load_config
from ..lifecycle.migrate import DROPPED, MigrationRefused, Progress, migrate
from ..oci.rules import format_bytes
from ..services import open_blobs
from ..storage.backends import open_database
from ..storage.records import BackendUnavailable
from ..storage.schema import redacted
from .main import _config, _require_data, config_option, data_option


def _target(
    source: Config, to_data: Path | None, to_database: str, to_blob_store: str, endpoint: str, region: str
) -> Config:
    """The target's settings, from the flags alone: CARGOHOLD_* describe the source."""
    if not (to_data or to_database or to_blob_store):
        raise click.ClickException(
            "say where to migrate to: --to-database postgresql://... and --to-blob-store s3://..., or --to-data DIR"
        )
    local = [what for what, given in (("metadata", to_database), ("blobs", to_blob_store)) if not given]
    if local and to_data is None:
        raise click.ClickException(
            f"the target keeps its {' and '.join(local)} in a data directory: give --to-data DIR "
            "(or --to-database / --to-blob-store)"
        )
    overrides = {
        "data": to_data or source.data,  # unused when both halves are remote
        "database": to_database,
        "blob_store": to_blob_store,
        "s3_endpoint": endpoint,
        "s3_region": region or source.s3_region,
        "fsync": source.fsync,
    }
    try:
        target = load_config(None, environ={}, **overrides)
    except ConfigError as err:
        raise click.ClickException(f"target: {err}") from None
    if str(target.database_target) == str(source.database_target) or (
        not to_database and to_data and to_data.resolve() == source.data.resolve()
    ):
        raise click.ClickException("the target database is the source's: migrate to another one")
    same_bucket = to_blob_store and (target.s3_location, target.s3_endpoint) == (
        (source.s3_location, source.s3_endpoint) if source.blob_store else None
    )
    same_directory = not to_blob_store and not source.blob_store and target.data.resolve() == source.data.resolve()
    if same_bucket or same_directory:
        raise click.ClickException("the target blob store is the source's: migrate to another one")
    return target


def _describe(config: Config) -> str:
    database = redacted(str(config.database_target))
    blobs = config.blob_store or str(config.data / "blobs")
    return f"{database} + {blobs}"


def _check_secret(config: Config) -> None:
    """Signing keys are copied sealed: make sure now that the source's secret file opens them,
    since the target will need that very file."""
    from ..auth.sealing import Sealer, SealingError, load_secret

    database = open_database(config.database_target, config.database_timeout)
    try:
        rows = database.executor.execute("SELECT kid, sealed FROM signing_key").fetchall()
        if not rows:
            return
        try:
            sealer = Sealer(load_secret(config.secret_path, create=False), "token signing keys")
            for kid, sealed in rows:
                sealer.open(kid, sealed)
        except SealingError as err:
            raise click.ClickException(
                f"the source's signing keys cannot be opened with {config.secret_path} ({err}): "
                "set secret_file (CARGOHOLD_SECRET_FILE) to the source's secret file"
            ) from None
    finally:
        database.close()


def _show(progress: Progress) -> None:
    click.echo(
        f"blobs {progress.blobs_done}/{progress.blobs_total}, "
        f"{format_bytes(progress.bytes_done)} of {format_bytes(progress.bytes_total)} "
        f"({format_bytes(progress.bytes_copied)} copied)",
        err=True,
    )


@click.command("migrate")
@config_option
@data_option
@click.option("--to-database", default="", help="Target metadata database: postgresql://user@host:port/name.")
@click.option("--to-blob-store", default="", help="Target blob store: s3://bucket[/prefix].")
@click.option("--to-s3-endpoint", default="", help="The target bucket's S3 endpoint URL (empty for AWS).")
@click.option("--to-s3-region", default="", help="The target bucket's region (default: s3_region).")
@click.option(
    "--to-data",
    type=click.Path(file_okay=False, path_type=Path),
    help="Target data directory, for a target keeping its SQLite metadata or its blobs there.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be copied; copy nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def migrate_command(
    config_file: Path | None,
    data: Path | None,
    to_database: str,
    to_blob_store: str,
    to_s3_endpoint: str,
    to_s3_region: str,
    to_data: Path | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Copy the whole registry to another database and blob store, e.g. from the data directory
    to PostgreSQL and S3. Stop the registry first. Blobs are verified and copied first, then
    every row; a rerun completes an interrupted migration and copies nothing twice. The target
    must be empty (or hold what an earlier run of this migration left); it then serves with
    the source's secret file. Exit 1 on a corrupt or missing source blob."""
    source = _config(config_file, data=data)
    _require_data(source)
    target = _target(source, to_data, to_database, to_blob_store, to_s3_endpoint, to_s3_region)
    _check_secret(source)
    handles = []
    try:
        source_db = open_database(source.database_target, source.database_timeout)
        handles.append(source_db)
        target_db = open_database(target.database_target, target.database_timeout)  # made current if empty
        handles.append(target_db)
        report = migrate(source_db, open_blobs(source), target_db, open_blobs(target), dry_run, _show)
    except (MigrationRefused, BackendUnavailable) as err:
        raise click.ClickException(str(err)) from None
    except Exception as err:
        if type(err).__module__.startswith("botocore"):  # a bucket missing, refused credentials
            raise click.ClickException(f"the object store: {' '.join(str(err).split())[:300]}") from None
        raise
    finally:
        for handle in handles:
            handle.close()
    if as_json:
        where = {"source": _describe(source), "target": _describe(target)}
        click.echo(json.dumps(where | asdict(report) | {"ok": report.ok, "dropped": sorted(DROPPED)}, indent=2))
    else:
        verb = "would copy" if dry_run else "copied"
        click.echo(f"{_describe(source)} -> {_describe(target)}{' (dry run)' if dry_run else ''}")
        click.echo(
            f"{verb} {report.blobs_copied} blob(s), {format_bytes(report.bytes_copied)}; "
            f"{report.blobs_present} of {report.blobs} already at the target"
        )
        rows = sum(report.rows_copied.values())
        dropped = ", ".join(sorted(DROPPED))
        click.echo(f"{verb} {rows} row(s) in {len(report.rows_copied)} tables; not copied: {dropped}")
    for text in report.corrupt:
        click.echo(f"corrupt source blob (not copied): {text}", err=True)
    for text in report.missing:
        click.echo(f"missing source blob: {text}", err=True)
    if report.corrupt or report.missing:
        click.echo("no row was copied: repair or delete those blobs, then run migrate again", err=True)
    if report.source_changed:
        click.echo("the source changed during the migration: stop its server, then run migrate again", err=True)
    if report.ok and not dry_run:
        click.echo(f"done: serve from the target with the source's secret file {source.secret_path}", err=True)
    sys.exit(0 if report.ok else 1)


def register(group: click.Group) -> None:
    group.add_command(migrate_command)
