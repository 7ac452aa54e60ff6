"""An S3-compatible server of the tests' own: moto's server (`moto_server`, from the test
extras) on a free loopback port. Each test takes a bucket of its own with `create_bucket()`.
`S3Server` is what the tests rely on, which radosgw (tests/support/ceph.py) provides too."""

from __future__ import annotations

import abc
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from cargohold.storage.s3 import s3_client
from tests.support.servers import free_port
from tests.support.waiting import wait_until

# moto accepts any credentials; boto3 insists on having some.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "cargohold-test", "AWS_SECRET_ACCESS_KEY": "cargohold-test-secret"}
REGION = "us-east-1"


class S3Server(abc.ABC):
    """What the session fixture `s3` gives: moto by default, radosgw with CARGOHOLD_TEST_S3=radosgw.
    Each serves on 127.0.0.1:`port`, with `CREDENTIALS`."""

    port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """What a cargohold process needs to keep its blobs here."""
        return {**CREDENTIALS, "CARGOHOLD_S3_ENDPOINT": self.endpoint, "CARGOHOLD_S3_REGION": REGION}

    def create_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:16]}"
        s3_client(self.endpoint, REGION).create_bucket(Bucket=name)
        return name

    @abc.abstractmethod
    def stop(self) -> None: ...


class MotoServer(S3Server):
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        tool = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
        if tool is None:
            raise RuntimeError("moto_server is not installed (pip install 'moto[server]'; make .venv/.installed)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for key, value in CREDENTIALS.items():  # this process's own clients (the tests') need them too
            os.environ.setdefault(key, value)
        self.port = free_port()
        log = open(self.workdir / "moto.log", "wb")  # noqa: SIM115 - the server writes it while it runs
        self.process = subprocess.Popen(
            [tool, "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_until(self._answers, "moto_server to answer", timeout=30)
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"moto_server exited:\n{(self.workdir / 'moto.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.endpoint}/moto-api/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
