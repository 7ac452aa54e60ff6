"""One leader for the maintenance jobs among every process on a database: `Database.try_lead`
on both backends, and two `serve` replicas on one PostgreSQL database, of which one runs GC and
the other takes over within about one interval when the leader is killed."""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cargohold.storage.backends import open_database
from cargohold.storage.postgres import lead_key
from cargohold.storage.sql import Database
from tests.support.postgres import PostgresServer
from tests.support.servers import Cargohold

INTERVAL = 0.5  # gc_interval and upload_sweep_interval of the replicas
LEADS = "this process leads the scheduled job collect_garbage"
FOLLOWS = "another process leads the scheduled job collect_garbage"
GC_RAN = re.compile(r"scheduled job collect_garbage ran in")


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | Path]:
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        yield server.create_database()
    else:
        yield tmp_path / "metadata.sqlite3"


def test_one_handle_leads_until_it_closes(target: str | Path) -> None:
    first: Database = open_database(target)
    second: Database = open_database(target)
    try:
        assert first.try_lead("collect_garbage"), "nobody led: the first to ask leads"
        assert not second.try_lead("collect_garbage"), "two leaders at once"
        assert second.try_lead("retain"), "each job has a lead of its own"
        assert first.try_lead("collect_garbage"), "the leader must keep leading"
        assert not second.try_lead("collect_garbage")
        first.close()
        assert second.try_lead("collect_garbage"), "the leader closed: the next to ask takes over"
    finally:
        first.close()  # a second close does nothing on either backend
        second.close()


def test_a_leader_whose_session_ends_loses_the_lead(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    first, second = open_database(url), open_database(url)
    try:
        assert first.try_lead("collect_garbage") and not second.try_lead("collect_garbage")
        key = lead_key("collect_garbage")
        with psycopg.connect(url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND ((classid::bigint << 32) | objid::bigint) = %s",
                (key,),
            ).fetchall()
        assert ended == [(True,)], f"expected one session holding the lead, found {ended}"
        deadline = time.monotonic() + 10
        while not second.try_lead("collect_garbage"):  # the server ends the session at once, or nearly
            assert time.monotonic() < deadline, "the lock was not released when its session ended"
            time.sleep(0.05)
        assert not first.try_lead("collect_garbage"), "the old leader must find out it lost the lead"
    finally:
        first.close()
        second.close()


def wait_for(server: Cargohold, pattern: str, within: float) -> float:
    deadline = time.monotonic() + within
    while pattern not in server.log_text():
        assert time.monotonic() < deadline, (
            f"{server.workdir.name} never logged {pattern!r}:\n{server.log_text()[-3000:]}"
        )
        time.sleep(0.05)
    return time.monotonic()


def test_one_replica_runs_the_jobs_and_another_takes_over(postgres: PostgresServer, tmp_path: Path) -> None:
    secret = tmp_path / "secret.key"  # replicas share the database and the secret, not the data directory
    secret.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    env = {
        "CARGOHOLD_DATABASE": postgres.create_database(),
        "CARGOHOLD_SECRET_FILE": str(secret),
        "CARGOHOLD_GC_INTERVAL": f"{INTERVAL}s",
        "CARGOHOLD_UPLOAD_SWEEP_INTERVAL": f"{INTERVAL}s",
        "CARGOHOLD_LOG_LEVEL": "debug",
    }
    replicas = [Cargohold(tmp_path / name, extra_env=env) for name in ("a", "b")]
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:  # each has decided, one way or the other
            deadline = time.monotonic() + 15
            while LEADS not in replica.log_text() and FOLLOWS not in replica.log_text():
                assert time.monotonic() < deadline, replica.log_text()[-3000:]
                time.sleep(0.05)
        time.sleep(6 * INTERVAL)
        ran = [len(GC_RAN.findall(replica.log_text())) for replica in replicas]
        leaders = [replica for replica in replicas if LEADS in replica.log_text()]
        assert len(leaders) == 1, f"leaders: {[r.workdir.name for r in leaders]}; GC runs per replica: {ran}"
        leader = leaders[0]
        follower = replicas[1 - replicas.index(leader)]
        assert FOLLOWS in follower.log_text()
        assert len(GC_RAN.findall(leader.log_text())) >= 3, f"the leader ran GC {ran} times"
        assert not GC_RAN.search(follower.log_text()), f"the follower ran GC too: {ran}"

        leader.kill()  # SIGKILL: its session ends with its connection, and the lock with it
        killed = time.monotonic()
        took = wait_for(follower, LEADS, within=15) - killed
        assert took < INTERVAL + 3, f"the follower took over after {took:.1f} s (interval {INTERVAL} s)"
        before = len(GC_RAN.findall(follower.log_text()))
        deadline = time.monotonic() + 10
        while len(GC_RAN.findall(follower.log_text())) < before + 2:
            assert time.monotonic() < deadline, "the new leader does not run GC"
            time.sleep(0.05)
    finally:
        for replica in replicas:
            replica.stop()
    for replica in replicas:
        assert "Traceback" not in replica.log_text(), replica.log_text()[-3000:]
