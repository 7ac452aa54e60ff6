"""Fixtures that start real servers on loopback ports for the whole test session."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.auth import SecureRegistry
from tests.support.ceph import RadosGateway
from tests.support.clients import ContainersTools, Dockerd
from tests.support.inprocess import InProcessRegistry
from tests.support.postgres import PostgresServer
from tests.support.s3 import MotoServer, S3Server
from tests.support.servers import Cargohold, Distribution, ServerProcess


def _serving(server: ServerProcess) -> Iterator[ServerProcess]:
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cargohold(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cargohold]:
    yield from _serving(Cargohold(tmp_path_factory.mktemp("cargohold")))


@pytest.fixture(scope="session")
def registry_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessRegistry]:
    """Our registry application in this process: for API-level tests that need no socket."""
    app = InProcessRegistry(tmp_path_factory.mktemp("in-process")).start()
    yield app
    app.stop()


Startable = TypeVar("Startable", InProcessRegistry, Cargohold)


def _registries_with(
    make: Callable[[Path, dict[str, str]], Startable], tmp_path: Path
) -> Iterator[Callable[[dict[str, str]], Startable]]:
    """A factory of registries of the test's own, each in a directory of its own; all stop after."""
    started: list[Startable] = []

    def start(env: dict[str, str]) -> Startable:
        registry = make(tmp_path / f"registry-{len(started)}", env)
        started.append(registry)
        registry.start()
        return registry

    yield start
    for registry in started:
        registry.stop()


@pytest.fixture
def registry_app_with(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], InProcessRegistry]]:
    """In-process registries of the test's own with extra CARGOHOLD_* settings."""
    yield from _registries_with(lambda workdir, env: InProcessRegistry(workdir, extra_env=env), tmp_path)


@pytest.fixture(scope="session")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    yield from _serving(Distribution(tmp_path_factory.mktemp("distribution")))


@pytest.fixture(params=["cargohold", "distribution"])
def any_registry(request: pytest.FixtureRequest) -> ServerProcess:
    """Each client scenario runs against ours and, as a check on the test itself, the reference."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def cargohold_with(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Cargohold]]:
    """Start registries of the test's own with extra CARGOHOLD_* settings; all stop afterwards."""
    yield from _registries_with(lambda workdir, env: Cargohold(workdir, extra_env=env), tmp_path)


@pytest.fixture
def fresh_cargohold(tmp_path: Path) -> Iterator[Cargohold]:
    """A registry of the test's own, for tests that kill or restart it."""
    server = Cargohold(tmp_path / "registry")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def secure_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRegistry]:
    """Our registry over HTTPS with access control on, shared by the auth tests."""
    server = Cargohold(tmp_path_factory.mktemp("secure"), auth=True, tls=True)
    server.start()
    yield SecureRegistry(server)
    server.stop()


S3_SERVERS = ("moto", "radosgw")
_started: list[str] = []  # what the session's S3 server said of its start, for the summary


def _s3_kind() -> str:
    return os.environ.get("CARGOHOLD_TEST_S3", "") or "moto"


def pytest_report_header(config: pytest.Config) -> str:
    return f"S3 server for the s3 fixture: {_s3_kind()} (CARGOHOLD_TEST_S3)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _started:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3-compatible server for the session; each test takes a bucket of its own. moto's by
    default; `CARGOHOLD_TEST_S3=radosgw` starts Ceph's radosgw instead (`make test-ceph`)."""
    kind = _s3_kind()
    if kind not in S3_SERVERS:
        pytest.fail(f"CARGOHOLD_TEST_S3={kind!r}: expected one of {', '.join(S3_SERVERS)}", pytrace=False)
    server: MotoServer | RadosGateway = (
        RadosGateway(tmp_path_factory.mktemp("radosgw"))
        if kind == "radosgw"
        else MotoServer(tmp_path_factory.mktemp("moto"))
    )
    try:
        server.start()
        if isinstance(server, RadosGateway):
            steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in server.timings.items())
            _started.append(f"radosgw served S3 at {server.endpoint}; bring-up: {steps}")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (initdb + pg_ctl on a loopback port of its own);
    each test takes a database of its own with `create_database()`."""
    # Not under pytest's temporary directory: as root the server runs as `postgres`, which may
    # not enter pytest-of-root (mode 700).
    workdir = Path(tempfile.mkdtemp(prefix="cargohold-pg-"))
    server = PostgresServer(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """One private Docker engine for the session; started only when a test asks for it."""
    engine = Dockerd()
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def containers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainersTools]:
    """skopeo and podman with private configs and storage."""
    tools = ContainersTools(tmp_path_factory.mktemp("containers"))
    yield tools
    tools.stop()
