#!/usr/bin/env python3
"""The container's health probe: `GET /v2/` on this container's own cargohold answers 200 (auth off)
or 401 (auth on, the challenge) when the process serves. Exit 0 when healthy, 1 when not.

Where to knock comes from the same environment `cargohold serve` reads: CARGOHOLD_LISTEN (a
wildcard host becomes loopback) and, for HTTPS, CARGOHOLD_TLS_CERT or CARGOHOLD_TLS_DEV. The
certificate is not verified: the probe talks to its own process over loopback, and a certificate
for the public name would not match 127.0.0.1 anyway. Standard library only, so it costs one
interpreter start and no import of cargohold.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys

HEALTHY = (200, 401)
TRUE = ("1", "true", "yes", "on")


def target(environ: dict[str, str]) -> tuple[str, int, bool]:
    listen = environ.get("CARGOHOLD_LISTEN") or "127.0.0.1:5000"
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1" if host != "::" else "::1"
    tls = bool(environ.get("CARGOHOLD_TLS_CERT")) or environ.get("CARGOHOLD_TLS_DEV", "").lower() in TRUE
    return host, int(port), tls


def main() -> int:
    host, port, tls = target(dict(os.environ))
    timeout = float(os.environ.get("CARGOHOLD_HEALTHCHECK_TIMEOUT", "4"))
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/v2/", headers={"user-agent": "cargohold-healthcheck"})
        status = connection.getresponse().status
    except OSError as err:
        print(f"unhealthy: {host}:{port}: {err}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    if status not in HEALTHY:
        print(f"unhealthy: GET /v2/ answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
