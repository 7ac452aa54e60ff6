"""The advisory database and the stored verdicts, on SQLite and on PostgreSQL: import from files,
directories and osv.dev-style zip archives, incremental by `modified`; and stored verdicts that
follow the database: an advisory added, withdrawn or given a fix changes the verdicts of the
images it concerns, and no other image's row."""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cargohold.storage.backends import open_database, open_metadata
from cargohold.storage.sql import Database
from cargohold.supply.advisories import AdvisoryStore
from cargohold.supply.importer import import_advisories
from cargohold.supply.packages import Catalog, Distro, Package
from cargohold.supply.queue import ADVISORIES, PUSH
from cargohold.supply.results import ScanStore
from cargohold.supply.scan import match_catalog
from tests.support.postgres import PostgresServer

DEBIAN = Distro("debian", "12", "bookworm", "Debian GNU/Linux 12 (bookworm)")


def deb(name: str, version: str, source: str | None = None) -> Package:
    return Package(
        type="deb",
        name=name,
        version=version,
        ecosystem="Debian:12",
        purl=f"pkg:deb/debian/{name}@{version}?distro=debian-12",
        source=source,
        layer="sha256:" + "1" * 64,
        location="var/lib/dpkg/status",
    )


def pypi(name: str, version: str) -> Package:
    return Package(type="pypi", name=name, version=version, ecosystem="PyPI", purl=f"pkg:pypi/{name.lower()}@{version}")


def advisory(
    ident: str,
    ecosystem: str,
    name: str,
    *,
    fixed: str | None = None,
    introduced: str = "0",
    modified: str = "2026-11-01T00:00:00Z",
    withdrawn: str | None = None,
    vector: str | None = None,
) -> dict[str, object]:
    events: list[dict[str, str]] = [{"introduced": introduced}]
    if fixed:
        events.append({"fixed": fixed})
    record: dict[str, object] = {
        "schema_version": "1.6.0",
        "id": ident,
        "modified": modified,
        "summary": f"{name}: a flaw",
        "aliases": [ident.replace("DSA", "CVE")],
        "affected": [
            {"package": {"ecosystem": ecosystem, "name": name}, "ranges": [{"type": "ECOSYSTEM", "events": events}]}
        ],
    }
    if withdrawn:
        record["withdrawn"] = withdrawn
    if vector:
        record["severity"] = [{"type": "CVSS_V3", "score": vector}]
    return record


def write(path: Path, *records: dict[str, object]) -> Path:
    path.write_text(json.dumps(records[0] if len(records) == 1 else list(records)))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        target: Path | str = tmp_path / "metadata.sqlite3"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        target = server.create_database()
    handle = open_database(target)
    open_metadata(handle)  # made current
    yield handle
    handle.close()


def test_import_from_files_directories_and_zip_archives_is_incremental(database: Database, tmp_path: Path) -> None:
    store = AdvisoryStore(database)
    one = write(tmp_path / "DSA-1.json", advisory("DSA-1", "Debian:12", "openssl", fixed="3.0.15-1"))
    folder = tmp_path / "more"
    folder.mkdir()
    write(folder / "GHSA-a.json", advisory("GHSA-aaaa-bbbb-cccc", "PyPI", "urllib3", fixed="1.26.5"))
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for index in range(30):
            zipped.writestr(f"PYSEC-{index}.json", json.dumps(advisory(f"PYSEC-{index}", "PyPI", f"pkg{index}")))
    seen: list[tuple[int, int | None]] = []
    report = import_advisories(store, [one, folder, archive], lambda done, total: seen.append((done, total)))
    assert (report.counts.added, report.counts.updated, report.rejected) == (32, 0, [])
    assert seen[-1] == (32, 32), "progress counts every record of every source"
    assert store.state().advisories == 32

    again = import_advisories(store, [one, folder, archive])
    assert (again.counts.added, again.counts.updated, again.counts.unchanged) == (0, 0, 32)

    newer = write(
        tmp_path / "DSA-1b.json",
        advisory("DSA-1", "Debian:12", "openssl", fixed="3.0.16-1", modified="2026-11-20T10:00:00+01:00"),
    )
    older = write(tmp_path / "DSA-1c.json", advisory("DSA-1", "Debian:12", "openssl", modified="2020-01-01T00:00:00Z"))
    report = import_advisories(store, [newer, older])
    assert (report.counts.updated, report.counts.unchanged) == (1, 1)
    record = store.record("DSA-1")
    assert record is not None and "3.0.16-1" in json.dumps(record.raw)
    assert store.state().newest == "2026-11-20T09:00:00.000000Z", "times compare in UTC, whatever their offset"


def test_a_bad_record_is_reported_with_where_and_why_and_the_others_still_land(
    database: Database, tmp_path: Path
) -> None:
    store = AdvisoryStore(database)
    good = advisory("GHSA-good-good-good", "npm", "lodash", fixed="4.17.21")
    no_id = {"modified": "2026-01-01T00:00:00Z", "affected": []}
    path = write(tmp_path / "batch.json", good, no_id)
    (tmp_path / "broken.json").write_text("{not json")
    report = import_advisories(store, [path, tmp_path / "broken.json"])
    assert report.counts.added == 1
    assert len(report.rejected) == 2
    assert report.rejected[0].startswith(f"{path}[1]: ") and "id" in report.rejected[0]
    assert "broken.json: not JSON" in report.rejected[1]


def _catalog(digest: str, *packages: Package) -> Catalog:
    return Catalog(image=digest, distro=DEBIAN, packages=list(packages), layers=["sha256:" + "1" * 64])


def _store_scanned(queue: ScanStore, advisories: AdvisoryStore, catalog: Catalog) -> None:
    queue.enqueue(catalog.image, "team/app", PUSH)
    job = queue.claim("test", 60)
    assert job is not None and job.digest == catalog.image
    queue.save_catalog(job, catalog, match_catalog(catalog, advisories), [], advisories.state().generation)


def _work_queue(queue: ScanStore, advisories: AdvisoryStore) -> list[str]:
    """What a scan worker does with advisories jobs: re-match the stored catalogue."""
    done = []
    while (job := queue.claim("test", 60)) is not None:
        assert job.reason == ADVISORIES
        catalog = queue.catalog(job.digest)
        assert catalog is not None
        queue.save_evaluation(job, match_catalog(catalog, advisories), advisories.state().generation)
        done.append(job.digest)
    return sorted(done)


def _row(database: Database, digest: str) -> tuple[object, ...]:
    return tuple(database.executor.execute("SELECT * FROM scan_result WHERE digest = ?", (digest,)).fetchone())


def test_stored_verdicts_follow_the_database_and_only_for_the_images_concerned(
    database: Database, tmp_path: Path
) -> None:
    advisories, queue = AdvisoryStore(database), ScanStore(database)
    web = _catalog(
        "sha256:" + "a" * 64, deb("libssl3", "3.0.11-1~deb12u2", source="openssl"), pypi("urllib3", "1.26.4")
    )
    db_image = _catalog("sha256:" + "b" * 64, deb("libpq5", "15.8-0+deb12u1", source="postgresql-15"))
    for catalog in (web, db_image):
        _store_scanned(queue, advisories, catalog)
    untouched = _row(database, db_image.image)
    assert queue.result(web.image).vulnerabilities == []  # type: ignore[union-attr]

    # Added: an advisory against openssl (the source package of libssl3) concerns `web` only.
    import_advisories(
        advisories,
        [
            write(
                tmp_path / "a.json",
                advisory(
                    "DSA-5700-1",
                    "Debian:12",
                    "openssl",
                    fixed="3.0.13-1~deb12u1",
                    vector="CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                ),
            )
        ],
    )
    assert _work_queue(queue, advisories) == [web.image]
    found = queue.result(web.image)
    assert found is not None
    assert [(v.id, v.package, v.severity, v.fixed) for v in found.vulnerabilities] == [
        ("DSA-5700-1", "libssl3", "CRITICAL", ("3.0.13-1~deb12u1",))
    ]
    assert found.summary["CRITICAL"] == 1
    assert _row(database, db_image.image) == untouched

    # Given a fix the installed version already has: the verdict clears.
    import_advisories(
        advisories,
        [
            write(
                tmp_path / "b.json",
                advisory(
                    "DSA-5700-1", "Debian:12", "openssl", fixed="3.0.11-1~deb12u1", modified="2026-11-02T00:00:00Z"
                ),
            )
        ],
    )
    assert _work_queue(queue, advisories) == [web.image]
    assert queue.result(web.image).vulnerabilities == []  # type: ignore[union-attr]

    # A PyPI advisory, then its withdrawal.
    import_advisories(
        advisories, [write(tmp_path / "c.json", advisory("PYSEC-2021-59", "PyPI", "URLLib3", fixed="1.26.5"))]
    )
    assert _work_queue(queue, advisories) == [web.image]
    assert [v.id for v in queue.result(web.image).vulnerabilities] == ["PYSEC-2021-59"]  # type: ignore[union-attr]
    import_advisories(
        advisories,
        [
            write(
                tmp_path / "d.json",
                advisory(
                    "PYSEC-2021-59",
                    "PyPI",
                    "urllib3",
                    fixed="1.26.5",
                    modified="2026-12-01T00:00:00Z",
                    withdrawn="2026-12-01T00:00:00Z",
                ),
            )
        ],
    )
    assert _work_queue(queue, advisories) == [web.image]
    assert queue.result(web.image).vulnerabilities == []  # type: ignore[union-attr]
    assert advisories.state().withdrawn == 1
    assert _row(database, db_image.image) == untouched, "no change touched the other image's row"

    # An advisory for another release of Debian concerns nobody's verdict.
    import_advisories(advisories, [write(tmp_path / "e.json", advisory("DSA-9-1", "Debian:11", "postgresql-15"))])
    _work_queue(queue, advisories)
    assert queue.result(db_image.image).vulnerabilities == []  # type: ignore[union-attr]


def test_a_request_that_arrives_while_a_job_runs_is_not_lost(database: Database) -> None:
    queue = ScanStore(database)
    queue.enqueue("sha256:" + "c" * 64, "team/app")
    job = queue.claim("first", 60)
    assert job is not None
    queue.enqueue("sha256:" + "c" * 64, "team/app", ADVISORIES)  # arrives mid-job
    queue.save_catalog(job, _catalog(job.digest), [], [], 0)
    again = queue.claim("second", 60)
    assert again is not None and again.digest == job.digest, "the merged request is due again"
    assert again.reason == PUSH, "a pending push keeps its reason (it needs the image read)"


def test_a_lease_that_runs_out_lets_another_worker_take_the_job(database: Database) -> None:
    queue = ScanStore(database)
    queue.enqueue("sha256:" + "d" * 64, "team/app")
    assert queue.claim("dies", 0.2) is not None
    assert queue.claim("other", 60) is None, "leased"
    time.sleep(0.3)
    taken = queue.claim("other", 60)
    assert taken is not None and taken.attempts == 2


def test_results_of_images_no_repository_holds_are_forgotten(database: Database) -> None:
    queue, advisories = ScanStore(database), AdvisoryStore(database)
    catalog = _catalog("sha256:" + "e" * 64, pypi("urllib3", "1.26.4"))
    _store_scanned(queue, advisories, catalog)
    assert queue.result(catalog.image) is not None
    assert queue.prune() == 1, "no manifest has this digest"
    assert queue.result(catalog.image) is None
    assert database.executor.execute("SELECT count(*) FROM image_package").fetchone()[0] == 0


def test_the_same_record_twice_in_one_import_keeps_the_newer(database: Database, tmp_path: Path) -> None:
    store = AdvisoryStore(database)
    older = advisory("GHSA-twice-twic-twic", "npm", "qs", fixed="6.0.4", modified="2026-01-01T00:00:00Z")
    newer = advisory("GHSA-twice-twic-twic", "npm", "qs", fixed="6.0.5", modified="2026-02-01T00:00:00Z")
    report = import_advisories(store, [write(tmp_path / "both.json", newer, older)])
    assert (report.counts.added, report.counts.unchanged) == (1, 1)
    record = store.record("GHSA-twice-twic-twic")
    assert record is not None and record.modified == "2026-02-01T00:00:00Z"
