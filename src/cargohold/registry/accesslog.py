"""The access log: one line per request on stderr.

Written straight to the file descriptor with a timestamp formatted once per second:
the logging module's per-record machinery cost more than the rest of a manifest GET.
"""

from __future__ import annotations

import os
import sys
import time

# Request paths are client text: control characters are escaped so no one can forge log lines.
_ESCAPE_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}


class AccessLog:
    def __init__(self, fd: int | None = None) -> None:
        self._fd = sys.stderr.fileno() if fd is None else fd
        self._second = -1
        self._stamp = ""
        self._pid = os.getpid()  # worker processes share the log; the pid says which served

    def write(
        self, client: str, actor: str, method: str, path: str, status: int, sent: int, seconds: float, request_id: str
    ) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        path = path.translate(_ESCAPE_CONTROLS)
        line = (
            f'{self._stamp} access[{self._pid}] {client} {actor} "{method} {path}" {status} {sent} '
            f"{seconds * 1000:.1f}ms {request_id}\n"
        )
        os.write(self._fd, line.encode("utf-8", "backslashreplace"))
