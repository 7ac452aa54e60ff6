"""Running the `cargohold` client CLI as a user would: a subprocess with its own docker config dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class CargoholdCLI:
    def __init__(self, home: Path, env: Mapping[str, str] | None = None) -> None:
        self.home = home
        self.config_dir = home / "docker-config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_")},
            "DOCKER_CONFIG": str(self.config_dir),
            "XDG_CACHE_HOME": str(home / "cache"),
            **(env or {}),
        }

    def run(
        self, *args: str | os.PathLike[str], check: bool = True, input: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        __tracebackhide__ = True
        argv = [sys.executable, "-m", "cargohold", *map(str, args)]
        done = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, input=input, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"cargohold {' '.join(map(str, args))} exited {done.returncode}\n"
                f"--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}"
            )
        return done

    def json(self, *args: str | os.PathLike[str]) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def fails(self, *args: str | os.PathLike[str], timeout: float = 120, input: str | None = None) -> str:
        """Run a command that must fail: exit 1 with exactly one line on stderr, no traceback; returns it."""
        __tracebackhide__ = True
        done = self.run(*args, check=False, timeout=timeout, input=input)
        assert done.returncode == 1, f"expected exit 1, got {done.returncode}: {done.stdout}{done.stderr}"
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got:\n{done.stderr}"
        assert "Traceback" not in done.stderr
        return lines[0]


def cargohold(*args: str | os.PathLike[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """One `cargohold` command with none of the caller's CARGOHOLD_* settings; the caller judges it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_")}
    argv = [sys.executable, "-m", "cargohold", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
