"""Start-up: the port is taken first thing, so clients of a restarting registry wait instead of
being refused, and a second server on a busy port fails with one clear line."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.servers import Cargohold, free_port


def _serve(data: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_")} | {"CARGOHOLD_AUTH": "on"}
    command = [sys.executable, "-m", "cargohold", "serve", "--listen", f"127.0.0.1:{port}", "--data", str(data)]
    return subprocess.Popen(
        [*command, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def test_a_client_that_connects_during_start_up_is_answered(tmp_path: Path) -> None:
    port = free_port()
    first = _serve(tmp_path / "data", port)  # the first start makes the admin and the key
    try:
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
            time.sleep(0.002)
        # The port is open: the worker may still be loading the app. The request waits for it.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/v2/")
        assert conn.getresponse().status == 401
        conn.close()
    finally:
        first.terminate()
        first.wait(20)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_server_on_a_busy_port_fails_clearly(tmp_path: Path, workers: str) -> None:
    running = Cargohold(tmp_path / "running").start()
    try:
        second = _serve(tmp_path / "second", running.port, "--workers", workers)
        _, err = second.communicate(timeout=30)
        assert second.returncode == 1
        assert f"Error: cannot listen on 127.0.0.1:{running.port}: address already in use" in err.decode()
        assert "Traceback" not in err.decode()
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
        conn.request("GET", "/v2/")
        assert conn.getresponse().status == 200, "the running server keeps its port and its clients"
    finally:
        running.stop()
