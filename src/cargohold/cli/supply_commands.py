"""Supply-chain commands: `sbom`, `scan`, `lint` (client side, any image any client can read) and
`vulndb import|status`, `scan-worker` (on the registry's stores, like the other maintenance commands).

`scan` reads the advisory database from the configured metadata store (`--data`, or the
`database` setting for PostgreSQL): the one `cargohold vulndb import` fills and the registry's
own scans use.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..client import Client, ClientError
from ..client.syncread import ThreadBlobReader
from ..storage.backends import open_database, open_metadata
from ..storage.sql import Database
from ..supply import reports
from ..supply.advisories import AdvisoryStore
from ..supply.importer import ImportSourceError, import_advisories
from ..supply.inspect import ImageInput, Inspection, LayerInput, inspect_image
from ..supply.layers import LayerError
from ..supply.lint import SEVERITIES as LINT_SEVERITIES
from ..supply.lint import LintInputError, findings_json
from ..supply.osv import AdvisoryError
from ..supply.scan import SEVERITIES, ScanReport, match_catalog, split_ignored
from .client_commands import connection_options, run
from .main import _config, _require_data, config_option, data_option

SEVERITY_CHOICE = click.Choice([s for s in SEVERITIES if s not in ("NONE", "UNKNOWN")], case_sensitive=False)


def _database(config_file: Path | None, data: Path | None, *, create: bool = False) -> Database:
    config = _config(config_file, data=data)
    if create:
        config.data.mkdir(parents=True, exist_ok=True)
    else:
        _require_data(config)
    database = open_database(config.database_target, config.database_timeout)
    open_metadata(database)  # the schema is current, or the refusal says what to run
    return database


async def _inspect(client: Client, image: str, platform: str | None) -> Inspection:
    """Read the image's layers (each fetched as the walk goes, verified at its end) and inspect it."""
    found = await client.image(image, platform=platform)
    loop = asyncio.get_running_loop()
    readers: list[ThreadBlobReader] = []

    def opener(index: int) -> Any:
        layer = found.manifest.layers[index]

        def open_layer() -> ThreadBlobReader:
            reader = ThreadBlobReader(found.source.opener(layer), layer, loop, found.source.label)
            readers.append(reader)
            return reader

        return open_layer

    layers = [
        LayerInput(str(d.digest), d.media_type, d.size, opener(index)) for index, d in enumerate(found.manifest.layers)
    ]
    document = json.loads(found.payload)
    subject = ImageInput(found.source.label, found.digest, document, found.config, layers)

    def work() -> Inspection:
        try:
            try:
                inspection = inspect_image(subject)
            except (LayerError, LintInputError) as err:
                for reader in readers:  # bytes that are not what the digest says explain it best
                    reader.verify()
                raise ClientError(f"{found.source.label}: {err}") from None
            for reader in readers:
                reader.verify()
            return inspection
        finally:
            for reader in readers:
                reader.close()

    return await asyncio.to_thread(work)


def _inspected(image: str, platform: str | None, flags: dict[str, Any]) -> Inspection:
    """The image inspected through a client built from the flags; one line and exit 1 on failure."""
    return run(lambda client: _inspect(client, image, platform), flags)


@click.command()
@click.argument("image")
@click.option(
    "--format",
    "form",
    type=click.Choice(["cyclonedx", "spdx", "table"]),
    default="cyclonedx",
    show_default=True,
    help="CycloneDX 1.6 JSON, SPDX 2.3 JSON, or a table to read.",
)
@click.option("--platform", help="The image of an index to read, e.g. linux/arm64 (default: this machine's).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout.")
@connection_options
def sbom(image: str, form: str, platform: str | None, output: Path | None, **flags: Any) -> None:
    """The packages of IMAGE as a CycloneDX 1.6 or SPDX 2.3 document.

    IMAGE is a reference (registry/repo:tag, @digest), oci:DIR[:TAG] or docker-archive:FILE.
    """

    inspection = _inspected(image, platform, flags)
    catalog = inspection.catalog
    if form == "table":
        text = reports.catalog_table(catalog)
    else:  # the document libraries load only when a document is made (jsonschema's formats: 1.6 s)
        from ..supply.sbom import cyclonedx_json, spdx_json

        text = (spdx_json if form == "spdx" else cyclonedx_json)(catalog, image_name=image)
    _write(text, output)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text.rstrip("\n"))
        return
    partial = output.with_name(output.name + ".partial")
    partial.write_text(text if text.endswith("\n") else text + "\n")
    partial.replace(output)


@click.command()
@click.argument("image")
@click.option("--fail-on", type=SEVERITY_CHOICE, help="Exit 1 when a vulnerability this severe or worse is found.")
@click.option(
    "--ignore", multiple=True, metavar="ID", help="An advisory id or alias (CVE-…) not to report; repeatable."
)
@click.option(
    "--format",
    "form",
    type=click.Choice(["table", "json", "sarif", "cyclonedx"]),
    default="table",
    show_default=True,
    help="A table, JSON, SARIF 2.1.0 (code scanning), or CycloneDX 1.6 with a vulnerabilities section.",
)
@click.option("--platform", help="The image of an index to scan, e.g. linux/arm64 (default: this machine's).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout.")
@config_option
@data_option
@connection_options
def scan(
    image: str,
    fail_on: str | None,
    ignore: tuple[str, ...],
    form: str,
    platform: str | None,
    output: Path | None,
    config_file: Path | None,
    data: Path | None,
    **flags: Any,
) -> None:
    """Vulnerabilities of IMAGE's packages, from the offline advisory database."""
    database = _database(config_file, data)
    try:
        advisories = AdvisoryStore(database)

        inspection = _inspected(image, platform, flags)
        kept, ignored = split_ignored(match_catalog(inspection.catalog, advisories), ignore)
        report = ScanReport(image, inspection.catalog.image, inspection.catalog, kept, advisories.state(), ignored)
    finally:
        database.close()
    if form == "json":
        text = reports.dumps(reports.as_json(report))
    elif form == "sarif":
        text = reports.dumps(reports.sarif(report))
    elif form == "cyclonedx":
        from ..supply.sbom import cyclonedx_json

        text = cyclonedx_json(inspection.catalog, image_name=image, vulnerabilities=kept)
    else:
        text = reports.table(report)
    click.echo(reports.database_line(report), err=True)
    _write(text, output)
    threshold = fail_on.upper() if fail_on else None
    failing = report.failing(threshold)
    if failing:
        noun = "vulnerability" if len(failing) == 1 else "vulnerabilities"
        click.echo(f"error: {len(failing)} {noun} at {threshold} or worse (--fail-on {fail_on})", err=True)
        sys.exit(1)


@click.command()
@click.argument("image")
@click.option("--format", "form", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--fail-on", type=SEVERITY_CHOICE, help="Exit 1 when a finding this severe or worse is found.")
@click.option("--platform", help="The image of an index to lint, e.g. linux/arm64 (default: this machine's).")
@connection_options
def lint(image: str, form: str, fail_on: str | None, platform: str | None, **flags: Any) -> None:
    """Production checks IMAGE itself can answer: root user, no HEALTHCHECK, secrets, `latest`, setuid…"""

    findings = _inspected(image, platform, flags).lint
    if form == "json":
        click.echo(reports.dumps({"image": image, "findings": findings_json(findings)}))
    elif not findings:
        click.echo(f"{image}: no findings")
    else:
        for finding in findings:
            click.echo(f"{finding.severity:<8} {finding.id}  {finding.title}: {finding.detail} [{finding.location}]")
    if fail_on and any(LINT_SEVERITIES.index(f.severity) <= LINT_SEVERITIES.index(fail_on.upper()) for f in findings):
        sys.exit(1)


@click.group()
def vulndb() -> None:
    """The offline advisory database (OSV) that `scan` and the registry's scans match against."""


@vulndb.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@config_option
@data_option
def vulndb_import(paths: tuple[Path, ...], config_file: Path | None, data: Path | None) -> None:
    """Import OSV records: .json files, directories of them, or osv.dev's per-ecosystem all.zip.

    Incremental: a record replaces the stored one only if its `modified` is newer. Images the
    registry catalogued that a changed record concerns are queued for re-evaluation.
    """
    database = _database(config_file, data, create=True)
    try:
        store = AdvisoryStore(database)
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
            disable=not sys.stderr.isatty(),
            console=None,
        ) as bar:
            task = bar.add_task("records", total=None)
            report = import_advisories(
                store, list(paths), lambda done, total: bar.update(task, completed=done, total=total)
            )
        state = store.state()
    except (ImportSourceError, AdvisoryError) as err:
        raise click.ClickException(str(err)) from None
    finally:
        database.close()
    counts = report.counts
    click.echo(
        f"read {report.read} documents: {counts.added} added, {counts.updated} updated, {counts.withdrawn} withdrawn, "
        f"{counts.unchanged} unchanged, {len(report.rejected)} rejected; {counts.requeued} image(s) queued for "
        f"re-evaluation; the database holds {state.advisories} advisories"
    )
    for line in report.rejected[:20]:
        click.echo(f"rejected: {line}", err=True)
    if len(report.rejected) > 20:
        click.echo(f"rejected: … and {len(report.rejected) - 20} more", err=True)
    if report.rejected:
        sys.exit(1)


@vulndb.command("status")
@config_option
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def vulndb_status(config_file: Path | None, data: Path | None, as_json: bool) -> None:
    """How many advisories, how recent the newest, when last imported."""
    database = _database(config_file, data)
    try:
        state = AdvisoryStore(database).state()
    finally:
        database.close()
    age = state.age_days()
    if as_json:
        click.echo(json.dumps({**state.__dict__, "ageDays": age}, indent=2))
        return
    click.echo(f"{state.advisories} advisories ({state.withdrawn} withdrawn), generation {state.generation}")
    click.echo(f"newest record modified: {state.newest or 'never'}" + (f" ({age:.1f} days ago)" if age else ""))
    if age is not None and age > reports.STALE_DAYS:
        click.echo(f"warning: the newest advisory is {age:.0f} days old: import a newer archive", err=True)


@click.command("scan-worker")
@config_option
@data_option
@click.option("--supervised", is_flag=True, hidden=True, help="Exit when the supervisor is gone (set by `serve`).")
def scan_worker(config_file: Path | None, data: Path | None, supervised: bool) -> None:
    """Work the registry's scan queue: catalogue, scan and lint the images pushed (`scan_on_push`)."""
    from ..services import open_blobs
    from ..supply.worker import ScanWorker

    config = _config(config_file, data=data)
    _require_data(config)
    database = open_database(config.database_target, config.database_timeout)
    meta = open_metadata(database)
    blobs = open_blobs(config)
    stop = threading.Event()
    worker = ScanWorker(database, meta, blobs, lease=config.scan_lease)
    click.echo(f"scan worker {worker.name}: working the queue of {config.data.resolve()}", err=True)
    try:
        parent = os.getppid()
        worker.run(stop, alive=lambda: not supervised or os.getppid() == parent)
    except KeyboardInterrupt:
        pass
    finally:
        blobs.close()
        meta.close()


COMMANDS = (sbom, scan, lint, vulndb, scan_worker)


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)
